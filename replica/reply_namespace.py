"""The service answers only inside its own reply namespaces: a request whose `reply_to` names any
other channel (another deployment's, a channel an attacker wants flooded) is not executed and
nothing is published there; it is logged and counted."""

from __future__ import annotations

import logging
from typing import Any

from faststream.exceptions import AckMessage

from schemas.channels import Channels

log = logging.getLogger("workpools.requests")


def refuse_foreign_reply_to(channels: Channels, msg: Any) -> None:
    """Raises `AckMessage` (acknowledged, not executed, no reply) when `msg` asks for its answer
    outside `channels`' reply namespaces (the request gate, `replica.request_gate`)."""
    reply_to = msg.reply_to
    if reply_to and not channels.answers_on(reply_to):
        log.warning(
            "refused request %s: its reply_to %r is outside %s.* (acknowledged, not executed, no reply)",
            msg.correlation_id,
            reply_to[:200],
            channels.replies,
        )
        raise AckMessage()
