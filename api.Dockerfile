# The HTTP API. Build: docker build -f api.Dockerfile -t conveyor-api .
# Two stages: the build stage installs Conveyor and its pinned dependencies into a virtual
# environment; the final image gets that environment (without pip) and a non-root user,
# and no build tools.
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
RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --home-dir /app --shell /usr/sbin/nologin conveyor \
    && mkdir -p /data/storage /data/inbox && chown -R conveyor:conveyor /data \
    && rm -rf /usr/local/lib/python3.11/site-packages/pip /usr/local/bin/pip*
COPY --from=build /opt/venv /opt/venv
# `conveyor migrate` finds alembic.ini and migrations/ in the working directory.
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
USER conveyor
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
CMD ["conveyor", "api", "--host", "0.0.0.0", "--port", "8000"]
