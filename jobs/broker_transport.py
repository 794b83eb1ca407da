"""kombu's Redis transport with two fixes, so a worker survives losing or freezing Redis.

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

Second: kombu's Redis ``QoS.ack`` removes the delivery from Redis' unacked index *before* it
frees the prefetch slot, so an ack that times out (Redis frozen, a failover) keeps its slot
for good. With ``worker_prefetch_multiplier = 1`` a worker whose every slot lost an ack stops
fetching: it never issues another BRPOP, so it never notices the connection is fine again
and never reconnects. Reproduced by SIGSTOPping Redis while a job finishes. Here the slot is
freed whatever Redis answered; the delivery left in the unacked index is at worst restored
after the visibility timeout, and a second delivery of a finished job just acks.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis


class QoS(kombu_redis.QoS):
    def ack(self, delivery_tag: str) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except Exception:
            self._quick_ack(delivery_tag)  # free the prefetch slot, then report the failure
            raise

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except Exception:
            self._quick_ack(delivery_tag)
            raise


class Channel(kombu_redis.Channel):
    QoS = QoS

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
