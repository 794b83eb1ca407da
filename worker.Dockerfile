# Celery workers; the same image runs Flower and migrations.
# Build: docker build -f worker.Dockerfile -t conveyor-worker .
# Two stages, as api.Dockerfile: the final image has the virtual environment (without pip),
# a non-root user and what deployments need at run time (ssh client, git), no build tools.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml alembic.ini ./
COPY core ./core
COPY cli ./cli
COPY api ./api
COPY jobs ./jobs
COPY migrations ./migrations
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install . \
    && /opt/venv/bin/pip uninstall -y pip setuptools

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    CONVEYOR_ENV=production \
    CONVEYOR_LOG_FORMAT=json \
    CONVEYOR_STORAGE_DIR=/data/storage
# Deployments: Ansible connects with the ssh client and fetches playbooks with git.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --home-dir /app --shell /usr/sbin/nologin conveyor \
    && mkdir -p /data/storage /data/inbox && chown -R conveyor:conveyor /data \
    && rm -rf /usr/local/lib/python3.11/site-packages/pip /usr/local/bin/pip*
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
USER conveyor
# Celery's warm shutdown finishes running tasks on SIGTERM; give it time (compose:
# stop_grace_period). Unfinished acks_late tasks are redelivered and resume at their checkpoint.
STOPSIGNAL SIGTERM
CMD ["conveyor", "worker"]
