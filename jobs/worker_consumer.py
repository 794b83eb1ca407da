"""The worker's broker consumer, reconnecting quickly after Redis comes back.

Celery's consumer reconnects with kombu's default back-off (2, 4, 6 ... 30 s between tries,
not configurable through settings), so a worker could idle for up to 30 s after Redis is
back while the relay has already republished the backlog. This consumer tries every
``RECONNECT_INTERVALS`` instead: a refused TCP connect costs nothing.
"""

from __future__ import annotations

import functools
from typing import Any

from celery.worker.consumer import Consumer

# kombu's ensure_connection back-off: first pause, increment, longest pause (seconds).
RECONNECT_INTERVALS = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 1.0}


class QuickReconnectConsumer(Consumer):  # type: ignore[misc]
    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = functools.partial(conn.ensure_connection, **RECONNECT_INTERVALS)
        return super().ensure_connected(conn)
