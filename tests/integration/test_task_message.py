"""The task messages we LPUSH ourselves are what kombu's producer would have pushed (the
Redis transport's envelope), and kombu's consumer decodes them into the Celery request the
worker expects. Both through a real redis-server."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis
from celery import Celery
from kombu.connection import Connection
from kombu.entity import Queue

from core.broker.breaker import RedisBreaker
from core.broker.celery_config import celery_config
from core.broker.publisher import JobMessage, JobPublisher
from core.broker.task_names import route_for
from core.settings import Settings

# Fresh per message (uuid4s, the publishing process): compared by shape, not value.
_PER_MESSAGE = {"id", "root_id", "origin"}


def _kombu_envelope(settings: Settings, ours: dict[str, Any]) -> dict[str, Any]:
    """What kombu's producer pushes for the same task, body and headers."""
    celery = Celery("reference", set_as_current=False)
    celery.conf.update(celery_config(settings))
    body = json.loads(base64.b64decode(ours["body"]))
    with celery.producer_or_acquire() as producer:
        producer.publish(
            body,
            exchange="",
            routing_key=ours["properties"]["delivery_info"]["routing_key"],
            serializer="json",
            headers=ours["headers"],
            correlation_id=ours["properties"]["correlation_id"],
            reply_to="",
            delivery_mode=2,
            retry=False,
        )
    celery.close()
    client = redis.Redis.from_url(settings.redis_url)
    raw = client.lpop(route_for("noop").queue)
    client.close()
    assert isinstance(raw, bytes)
    envelope: dict[str, Any] = json.loads(raw)
    return envelope


def test_our_envelope_is_kombus(settings: Settings) -> None:
    publisher = JobPublisher.from_settings(settings, RedisBreaker.from_settings(settings))
    job_id = uuid.uuid4()
    assert publisher.publish(JobMessage("noop", job_id, "req-1", 30.0))
    client = redis.Redis.from_url(settings.redis_url)
    raw = client.lpop(route_for("noop").queue)
    client.close()
    publisher.close()
    assert isinstance(raw, bytes)
    ours = json.loads(raw)
    theirs = _kombu_envelope(settings, ours)

    # kombu draws a fresh delivery tag; everything else is the same, key for key.
    assert uuid.UUID(ours["properties"].pop("delivery_tag"))
    assert uuid.UUID(theirs["properties"].pop("delivery_tag"))
    assert ours == theirs
    assert json.loads(base64.b64decode(ours["body"])) == [
        [str(job_id)],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    headers = ours["headers"]
    assert headers["task"] == route_for("noop").task
    assert headers["id"] == headers["root_id"] == ours["properties"]["correlation_id"]
    assert headers["timelimit"] == [30.0 + settings.time_limit_grace_seconds, 30.0]
    assert headers["request_id"] == "req-1"
    assert headers.keys() >= _PER_MESSAGE


def test_kombu_consumer_reads_our_message(settings: Settings) -> None:
    publisher = JobPublisher.from_settings(settings, RedisBreaker.from_settings(settings))
    job_id = uuid.uuid4()
    assert publisher.publish(JobMessage("noop", job_id, None, 60.0))
    publisher.close()
    route = route_for("noop")
    with Connection(settings.redis_url) as connection:
        queue = Queue(route.queue, channel=connection.default_channel)
        message = queue.get(no_ack=False)
        assert message is not None
        assert message.headers["task"] == route.task
        assert message.decode() == [
            [str(job_id)],
            {},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        ]
        assert message.delivery_info["routing_key"] == route.queue
        message.ack()
