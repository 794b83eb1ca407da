"""The baseline of bench/get_latency.py: a bare FastAPI app doing one primary-key SELECT of
a job with an async psycopg pool, on the same database, served by uvicorn with the same
settings as Conveyor's API. No auth, no middleware, no validation of the answer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


def create_app() -> FastAPI:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        os.environ["BENCH_DATABASE_URL"],
        kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 1},
        min_size=4,
        max_size=20,
        open=False,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open()
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,))
            row = await cursor.fetchone()
        if row is None:
            raise HTTPException(404)
        return dict(row)

    return app
