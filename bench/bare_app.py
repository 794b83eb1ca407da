"""The baselines of bench/get_latency.py: a bare FastAPI app on the same database and Redis,
served by uvicorn with the same settings as Conveyor's API. No auth, no middleware, no
validation of the answer.

- ``GET /jobs/{id}``: one primary-key SELECT of a job.
- ``POST /jobs``: the least a durable submit does, one committed INSERT into the same
  ``jobs`` table (its indexes and triggers) and one LPUSH; no job event, no idempotency, no
  dispatch mark (the row is inserted as dispatched so no relay touches it).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
from fastapi import FastAPI, HTTPException
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel

_INSERT = """
INSERT INTO jobs (id, kind, params, request_fingerprint, dispatched_at)
VALUES (%s, %s, %s, '', now()) RETURNING id, created_at
"""


class Submission(BaseModel):
    kind: str
    params: dict[str, Any] = {}


def create_app() -> FastAPI:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        os.environ["BENCH_DATABASE_URL"],
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 1},
        min_size=4,
        max_size=20,
        open=False,
    )
    broker = redis.asyncio.Redis.from_url(os.environ["BENCH_REDIS_URL"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open()
        yield
        await pool.close()
        await broker.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))
            row = await cursor.fetchone()
        if row is None:
            raise HTTPException(404)
        return dict(row)

    @app.post("/jobs", status_code=202)
    async def submit(submission: Submission) -> dict[str, Any]:
        job_id = uuid.uuid4()
        async with pool.connection() as conn:
            cursor = await conn.execute(
                _INSERT, (job_id, submission.kind, Jsonb(submission.params))
            )
            row = await cursor.fetchone()
        await broker.lpush("bench-bare", json.dumps({"job_id": str(job_id)}))
        assert row is not None
        return {"id": str(job_id), "status": "queued", "created_at": row["created_at"]}

    return app
