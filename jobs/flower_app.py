"""The Celery app Flower loads: broker and serialisation settings, nothing else.

Flower runs with a minimal environment (``cli.launch.flower_command``): the broker's URL and
credentials, its own basic-auth credentials, and no database URL or secret key. It needs no
task code either: it learns task names from the workers' events. The settings come from that
environment alone, never from the working directory's ``.env``, which may hold the rest.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from core.broker.celery_config import celery_config
from core.logging import configure_logging
from core.settings import Settings


def make_flower_celery(settings: Settings) -> Any:
    configure_logging(settings)  # Flower's and Tornado's records through our renderer
    app = Celery("conveyor", set_as_current=True)
    app.conf.update(celery_config(settings))
    return app


app = make_flower_celery(Settings(_env_file=None))
