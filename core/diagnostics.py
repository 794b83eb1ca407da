"""Parameters of the diagnostic job kinds, ``noop`` and ``sleep``: one definition that the API
validates submissions with and the worker reads back."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fail_attempts: int = Field(
        default=0, ge=0, le=100, description="The first N attempts fail on purpose (retry tests)."
    )


class SleepParams(NoopParams):
    seconds: float = Field(gt=0, le=3600, description="Total time to sleep.")
    steps: int = Field(
        default=1, ge=1, le=10_000, description="Units of work; progress is saved after each."
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Run-time limit of one attempt; at most the operator's limit for sleep "
        "jobs (CONVEYOR_TIME_LIMITS), which is also the default.",
    )
    uninterruptible: bool = Field(
        default=False,
        description="Diagnostic: ignore cancel and the soft time limit, like a body stuck in "
        "a call it cannot leave; only the hard limit (process killed) ends it.",
    )


PARAMS_MODELS: dict[str, type[NoopParams]] = {"noop": NoopParams, "sleep": SleepParams}
