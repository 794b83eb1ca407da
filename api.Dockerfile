# The HTTP API. Build: docker build -f api.Dockerfile -t conveyor-api .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVEYOR_ENV=production \
    CONVEYOR_LOG_FORMAT=json \
    CONVEYOR_STORAGE_DIR=/data/storage

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
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
CMD ["conveyor", "api", "--host", "0.0.0.0", "--port", "8000"]
