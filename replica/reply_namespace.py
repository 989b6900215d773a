"""The service answers only inside its own reply namespaces: a request whose `reply_to` names any
other channel (another deployment's, a channel an attacker wants flooded) is not executed and
nothing is published there; it is logged and counted."""

from __future__ import annotations

import logging
from typing import Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage

from schemas.channels import Channels

log = logging.getLogger("workpools.requests")


class OwnReplyChannels(BaseMiddleware):
    channels: Channels

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        reply_to = msg.reply_to
        if reply_to and not self.channels.answers_on(reply_to):
            log.warning(
                "refused request %s: its reply_to %r is outside %s.* (acknowledged, not executed, no reply)",
                msg.correlation_id,
                reply_to[:200],
                self.channels.replies,
            )
            raise AckMessage()
        return await call_next(msg)


def own_reply_channels(channels: Channels) -> type[OwnReplyChannels]:
    return type("OwnReplyChannelsOf", (OwnReplyChannels,), {"channels": channels})
