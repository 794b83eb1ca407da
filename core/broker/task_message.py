"""Celery task messages (protocol 2), built directly as the bytes kombu's Redis transport
would LPUSH.

``Celery.send_task`` rebuilds routing, options and a queue declaration for every message, and
kombu's ``Producer.publish`` then serializes, compresses, wraps and encodes it again; in the
API's profile those were most of a publish. A job message has one shape (one positional
argument, the job id; no eta, expiry, chain or chord) on a direct queue (the anonymous
exchange, the queue as routing key, priority 0: the list named after the queue), so it is
built here in one pass: what kombu would have pushed, byte for byte apart from key order
(tests/integration/test_task_message.py compares the two; tests/e2e run real workers on it).
The same bytes serve the sync publisher and the API's async one.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class TaskMessage:
    """One LPUSH: the queue's list and the envelope."""

    queue: str
    payload: bytes
    task_id: str


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
    body = json.dumps([[job_id], {}, _EMBED]).encode()
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
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
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            # The worker's QoS tracks an unacked delivery by this tag (kombu: a uuid4).
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return TaskMessage(queue=queue, payload=json.dumps(envelope).encode(), task_id=task_id)
