"""The replica: composition of one workpools process, its background loops and its life (serve, reclaim, outbox relay, foreman)."""
