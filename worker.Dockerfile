# Celery workers, and the same image runs beat, Flower and migrations.
# Build: docker build -f worker.Dockerfile -t conveyor-worker .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVEYOR_ENV=production \
    CONVEYOR_LOG_FORMAT=json \
    CONVEYOR_STORAGE_DIR=/data/storage

# Deployments: Ansible connects with the ssh client and fetches playbooks with git.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client git \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --home-dir /app --shell /usr/sbin/nologin conveyor

# The sources stay in /app: `conveyor migrate` finds alembic.ini and migrations/ there.
WORKDIR /app
COPY pyproject.toml alembic.ini ./
COPY core ./core
COPY cli ./cli
COPY api ./api
COPY jobs ./jobs
COPY migrations ./migrations
RUN pip install . \
    && mkdir -p /data/storage \
    && chown -R conveyor:conveyor /data

USER conveyor
# Celery's warm shutdown finishes running tasks on SIGTERM; give it time (compose:
# stop_grace_period). Unfinished acks_late tasks are redelivered and resume at their checkpoint.
STOPSIGNAL SIGTERM
CMD ["conveyor", "worker"]
