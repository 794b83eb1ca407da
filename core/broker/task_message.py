"""Celery task messages (protocol 2) built directly, for kombu's ``Producer.publish``.

``Celery.send_task`` rebuilds routing, options and a queue declaration for every message;
in the API's profile that was most of a publish. A job message has one shape (one
positional argument, the job id; no eta, expiry, chain or chord), so it is built here from
the route and the job's time limits. The result is what ``send_task`` would publish (the
worker cannot tell the difference; tests/e2e run real workers on it), sent to the anonymous
exchange with the queue as routing key, as Celery itself does for direct queues.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class TaskMessage:
    body: tuple[list[str], dict[str, Any], dict[str, Any]]
    headers: dict[str, Any]
    task_id: str
    queue: str


def job_task_message(
    *,
    task: str,
    queue: str,
    job_id: str,
    soft_time_limit: float,
    time_limit: float,
    headers: dict[str, Any],
) -> TaskMessage:
    task_id = str(uuid.uuid4())
    return TaskMessage(
        body=([job_id], {}, _EMBED),
        headers={
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [time_limit, soft_time_limit],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": f"['{job_id}']",
            "kwargsrepr": "{}",
            "origin": _ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
            **headers,
        },
        task_id=task_id,
        queue=queue,
    )


def publish(producer: Any, message: TaskMessage) -> None:
    """Through kombu (inside ``producer.batch()`` this only buffers the LPUSH)."""
    producer.publish(
        message.body,
        exchange="",
        routing_key=message.queue,
        serializer="json",
        headers=message.headers,
        correlation_id=message.task_id,
        reply_to="",
        delivery_mode=2,
        retry=False,
    )
