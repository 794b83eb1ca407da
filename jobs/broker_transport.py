"""kombu's Redis transport with one fix, so a worker survives losing Redis.

With celery/kombu 5.7, when the broker connection is lost, Celery ``collect()``s it, which
detaches the transport from its kombu connection. Work that still refers to the old channel
then fails with ``AttributeError: 'NoneType' object has no attribute 'hostname'`` instead of
a connection error: restoring the unacked deliveries while closing the broken connection,
or acking a task that finishes after the loss. Celery handles connection errors (it logs
"Couldn't ack" and reconnects) but treats that AttributeError as an "Unrecoverable error"
and stops the worker. Reproduced by stopping Redis while a worker runs short tasks.

Here a detached channel raises ``redis.ConnectionError``. Nothing is lost by the message
not being acked or restored: a finished job is finished in PostgreSQL (a second delivery
cannot claim it); a claimed one is protected by its lease; and if Redis restarted empty the
broker epoch puts queued jobs back in the outbox.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("this channel's broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same fix for the Sentinel channel (the master found through Sentinel)."""


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
