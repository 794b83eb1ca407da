"""Celery configuration shared by the worker app and the API's publisher, so both sides agree
on serialisation, queues and routes. Building the app is the caller's job."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from core.broker.redis_client import sentinel_kwargs
from core.broker.task_names import DEFAULT_QUEUE, celery_routes
from core.settings import Settings


def broker_url(settings: Settings) -> str:
    """``redis_url``, or with Sentinel one ``sentinel://`` URL per Sentinel (kombu's form),
    carrying the master's credentials and database number."""
    if not settings.sentinel_addresses:
        return settings.redis_url_with_credentials
    url = urlsplit(settings.redis_url_with_credentials)
    userinfo = url.netloc.rpartition("@")[0]
    auth = f"{userinfo}@" if userinfo else ""
    db = url.path.strip("/") or "0"
    return ";".join(
        f"sentinel://{auth}{host}:{port}/{db}" for host, port in settings.sentinel_addresses
    )


def celery_config(settings: Settings) -> dict[str, Any]:
    timeout = settings.redis_socket_timeout
    transport_options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        # Never block a publish on a dead broker: the outbox relay retries later.
        "max_retries": 0,
        "retry_on_timeout": False,
        "health_check_interval": 10,
    }
    if settings.sentinel_addresses:
        transport_options["master_name"] = settings.redis_master_name
        transport_options["sentinel_kwargs"] = sentinel_kwargs(settings)
    return {
        "broker_url": broker_url(settings),
        "broker_transport_options": transport_options,
        "broker_connection_timeout": timeout,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": celery_routes(),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "result_backend": None,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        # Flower sees tasks from the workers' events (received/started/succeeded). A "sent"
        # event per publish would cost the API ~8% of its CPU per submit (py-spy).
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "timezone": "UTC",
        "enable_utc": True,
    }
