"""Redis faults below the HTTP layer, on a private redis-server that is really stopped or
frozen: publishing stays bounded and feeds the breaker, concurrent Redis calls do not queue
behind one hung call, two relays publish each job once, a Redis that lost its data gets its
published jobs back (broker epoch), queue depth is read through the breaker, and an ack lost
to a frozen Redis does not stop a consumer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pybreaker
import pytest
import redis
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.message import Message

from core import db
from core.broker.breaker import RedisBreaker
from core.broker.celery_config import celery_config
from core.broker.epoch import EPOCH_KEY
from core.broker.publisher import JobMessage, JobPublisher
from core.broker.queue_depth import queue_depths
from core.broker.redis_client import make_redis
from core.broker.relay import relay_pass, relay_undispatched
from core.broker.task_names import DEFAULT_QUEUE
from core.lifecycle import commands, leases, queries
from core.lifecycle.states import JobStatus
from core.models import Job
from core.queues import control as queue_control
from core.settings import Settings
from jobs import broker_transport
from tests import services


@pytest.fixture
def redis_settings(settings: Settings, private_redis: services.RedisServer) -> Settings:
    return settings.model_copy(
        update={"redis_url": private_redis.url, "redis_socket_timeout": 0.2, "breaker_fail_max": 3}
    )


@pytest.fixture
def broker(private_redis: services.RedisServer) -> Iterator[redis.Redis]:
    """A plain client of the private Redis for the test's own looks (no breaker)."""
    client = redis.Redis.from_url(private_redis.url, socket_timeout=2)
    yield client
    client.close()


def make_publisher(settings: Settings) -> JobPublisher:
    return JobPublisher.from_settings(settings, RedisBreaker.from_settings(settings))


def new_jobs(sessions: db.Sessions, count: int, kind: str = "noop") -> list[uuid.UUID]:
    with db.transaction(sessions) as session:
        return [
            commands.submit_job(
                session,
                kind=kind,
                params={},
                principal_id=None,
                max_attempts=5,
                time_limit_seconds=60,
            ).job.id
            for _ in range(count)
        ]


def message(kind: str) -> JobMessage:
    return JobMessage(kind, uuid.uuid4(), None, 60)


def timed_publish(publisher: JobPublisher) -> tuple[bool, float]:
    started = time.perf_counter()
    published = publisher.publish(message("noop"))
    return published, time.perf_counter() - started


def test_publish_is_bounded_when_redis_hangs_or_refuses(
    redis_settings: Settings, private_redis: services.RedisServer
) -> None:
    timeout = redis_settings.redis_socket_timeout
    publisher = make_publisher(redis_settings)
    try:
        assert timed_publish(publisher)[0] is True

        private_redis.pause()  # SIGSTOP: the kernel still accepts, nothing answers
        for _ in range(redis_settings.breaker_fail_max):
            published, elapsed = timed_publish(publisher)
            assert published is False
            assert elapsed < timeout + 0.3, "a publish to a hung Redis outlived its timeout"
        snapshot = publisher.breaker.snapshot()
        assert snapshot["state"] == "open"
        assert snapshot["failures"] == redis_settings.breaker_fail_max
        assert "Timeout" in snapshot["last_error"]

        published, elapsed = timed_publish(publisher)  # refused without touching Redis
        assert published is False
        assert elapsed < 0.02
        assert publisher.breaker.snapshot()["rejections"] == 1
    finally:
        private_redis.resume()
        publisher.close()

    private_redis.stop()  # nothing listens: connections are refused
    refused = make_publisher(redis_settings)
    try:
        for _ in range(redis_settings.breaker_fail_max):
            published, elapsed = timed_publish(refused)
            assert published is False
            assert elapsed < 0.2
        assert refused.breaker.state == "open"
    finally:
        refused.close()


def test_concurrent_calls_to_a_hung_redis_fail_in_parallel(
    redis_settings: Settings, private_redis: services.RedisServer
) -> None:
    """pybreaker's own ``call`` would serialize these: 6 x 0.2 s = 1.2 s for the last one."""
    settings = redis_settings.model_copy(update={"breaker_fail_max": 20})
    publisher = make_publisher(settings)
    private_redis.pause()
    results: list[tuple[bool, float]] = []
    barrier = threading.Barrier(6)

    def publish() -> None:
        barrier.wait(5)
        results.append(timed_publish(publisher))

    try:
        threads = [threading.Thread(target=publish) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        private_redis.resume()
        publisher.close()
    assert [published for published, _ in results] == [False] * 6
    assert max(elapsed for _, elapsed in results) < settings.redis_socket_timeout * 3
    assert publisher.breaker.snapshot()["failures"] == 6


def test_two_relays_publish_each_pending_job_once(
    redis_settings: Settings, sessions: db.Sessions, broker: redis.Redis
) -> None:
    job_ids = new_jobs(sessions, 300)
    publishers = [make_publisher(redis_settings) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def relay(publisher: JobPublisher) -> None:
        try:
            barrier.wait(5)
            while relay_undispatched(sessions, publisher, limit=40)["published"]:
                pass
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=relay, args=(p,)) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for publisher in publishers:
        publisher.close()

    assert not errors, errors
    assert sum(publisher.published for publisher in publishers) == len(job_ids)
    assert broker.llen("default") == len(job_ids)
    with db.transaction(sessions) as session:
        assert queries.outbox_stats(session)[0] == 0


def test_a_redis_that_lost_its_data_gets_the_published_jobs_back(
    redis_settings: Settings,
    sessions: db.Sessions,
    private_redis: services.RedisServer,
    broker: redis.Redis,
) -> None:
    publisher = make_publisher(redis_settings)
    client = make_redis(redis_settings)
    try:
        waiting, running = new_jobs(sessions, 2)
        first = relay_pass(sessions, publisher, client)
        assert first == {"published": 2, "pending": 0, "requeued_after_broker_reset": 0}
        assert broker.exists(EPOCH_KEY)
        with db.transaction(sessions) as session:
            assert leases.claim_job(
                session,
                job_id=running,
                queue=DEFAULT_QUEUE,
                owner="w",
                lease_seconds=30,
                grace=30,
            )
        assert relay_pass(sessions, publisher, client)["requeued_after_broker_reset"] == 0

        private_redis.stop()  # no persistence: both messages and the marker are gone
        assert relay_pass(sessions, publisher, client)["broker"] == "unavailable"
        private_redis.start()

        again = relay_pass(sessions, publisher, client)
        assert again == {"published": 1, "pending": 0, "requeued_after_broker_reset": 1}
        assert broker.llen("default") == 1  # the queued job, published again
        assert broker.exists(EPOCH_KEY)
        with db.transaction(sessions) as session:
            kept = session.get(Job, running)
            assert kept is not None
            assert kept.status == JobStatus.running.value  # its lease protects it
            republished = session.get(Job, waiting)
            assert republished is not None
            assert republished.dispatched_at is not None
        assert relay_pass(sessions, publisher, client)["requeued_after_broker_reset"] == 0
    finally:
        publisher.close()
        client.close()


def test_queue_depths_go_through_the_breaker(
    redis_settings: Settings, sessions: db.Sessions, private_redis: services.RedisServer
) -> None:
    publisher = make_publisher(redis_settings)
    client = make_redis(redis_settings)
    breaker = publisher.breaker
    try:
        for kind in ("noop", "sleep", "import"):
            assert publisher.publish(message(kind))
        assert queue_depths(client, breaker) == {"default": 2, "imports": 1, "deployments": 0}

        private_redis.stop()
        for _ in range(redis_settings.breaker_fail_max):
            assert queue_depths(client, breaker) == dict.fromkeys(
                ("default", "imports", "deployments")
            )
        assert breaker.state == pybreaker.STATE_OPEN
        rejected = breaker.snapshot()["rejections"]
        queue_depths(client, breaker)
        assert breaker.snapshot()["rejections"] == rejected + 1
    finally:
        publisher.close()
        client.close()


def test_an_ack_that_times_out_still_frees_the_prefetch_slot(
    redis_settings: Settings, private_redis: services.RedisServer
) -> None:
    """kombu's Redis QoS frees a delivery's prefetch slot only once Redis confirmed its ack,
    so a worker (prefetch one per slot) whose ack timed out on a frozen Redis never fetched
    again. With our transport the failed ack is reported and the next message still comes."""
    config = celery_config(redis_settings)
    received: list[Message] = []
    with Connection(
        config["broker_url"],
        transport=broker_transport.Transport,
        transport_options=config["broker_transport_options"],
    ) as connection:
        queue = Queue(f"ack-{uuid.uuid4().hex[:8]}")
        producer = connection.Producer()
        consumer = connection.Consumer(
            queue, callbacks=[lambda _body, message: received.append(message)]
        )
        consumer.qos(prefetch_count=1)
        with consumer:
            producer.publish({"n": 1}, routing_key=queue.name, declare=[queue])
            connection.drain_events(timeout=5)
            assert len(received) == 1

            private_redis.pause()
            try:
                with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                    received[0].ack()
            finally:
                private_redis.resume()

            producer.publish({"n": 2}, routing_key=queue.name, declare=[queue])
            deadline = time.monotonic() + 10
            while len(received) < 2 and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError, socket.timeout):
                    connection.drain_events(timeout=1)
    assert [message.payload["n"] for message in received] == [1, 2]


def test_a_held_job_is_never_published(
    redis_settings: Settings, sessions: db.Sessions, broker: redis.Redis
) -> None:
    """Whatever path commits a job of a paused queue (submit, a schedule's firing, an import,
    a deployment), its message is held back by the publisher, so no worker receives it and
    the relay publishes it once after the resume."""
    with db.transaction(sessions) as session:
        queue_control.pause(session, name="default", principal_id=None)
    try:
        held_job, free_job = new_jobs(sessions, 1)[0], new_jobs(sessions, 1, kind="import")[0]
        with db.transaction(sessions) as session:
            held, free = (
                JobMessage.of(queries.get_job(session, job_id=j)) for j in (held_job, free_job)
            )
    finally:  # later tests on this process's database (e2e modules) must find it running
        with db.transaction(sessions) as session:
            queue_control.resume(session, name="default")
    assert held.held
    assert not free.held
    publisher = make_publisher(redis_settings)
    assert publisher.publish(held) is False
    assert publisher.publish_many([held, free]) == [free_job]
    assert broker.llen("default") == 0
    assert broker.llen("imports") == 1
