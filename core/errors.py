"""One exception hierarchy for the whole platform. Each class carries a stable ``code``;
the docstring is the default message. HTTP statuses are mapped in ``api/error_handlers.py``.

ConveyorError
├── NotFound                  job_not_found, api_key_not_found
│   └── SecretNotFound        a secret named in a request or a deployment does not exist
├── Conflict
│   ├── IdempotencyConflict   same Idempotency-Key, different request
│   ├── InvalidTransition     e.g. cancel a finished job
│   └── LastAdminKey          revoking the only active admin key
├── BadRequest                a request the API cannot read at all (bad Host header,
│                             a truncated multipart body)
├── InvalidRequest            a request that fails validation
├── PayloadTooLarge           upload over the size cap
├── Unauthenticated           missing or unknown API key
├── RateLimited               too many failed authentications from one address
├── Forbidden                 role not allowed
├── DependencyUnavailable
│   ├── DatabaseUnavailable
│   └── BrokerUnavailable
├── LeaseLost                 a worker's write was fenced off (another attempt owns the job)
├── JobCancelled              raised between units when cancel was requested
└── JobFailed                 a job body gives up: carries code, message and optional where
    ├── TimeLimitExceeded     the job ran past its run-time limit
    └── ImportFailed          (core.imports.failures) a CSV import gives up as a whole
"""

from __future__ import annotations

from typing import Any, ClassVar


class ConveyorError(Exception):
    """Something went wrong in Conveyor."""

    code: ClassVar[str] = "conveyor_error"

    def __init__(self, message: str | None = None, *, where: dict[str, Any] | None = None):
        self.message = message or (self.__doc__ or self.code).strip()
        self.where = where
        super().__init__(self.message)


class NotFound(ConveyorError):
    """The resource does not exist or is not visible to you."""

    code = "not_found"


class SecretNotFound(NotFound):
    """The secret does not exist."""

    code = "secret_not_found"


class Conflict(ConveyorError):
    """The request conflicts with the current state."""

    code = "conflict"


class IdempotencyConflict(Conflict):
    """This Idempotency-Key was already used with a different request."""

    code = "idempotency_key_reused"


class InvalidTransition(Conflict):
    """The job is not in a state that allows this action."""

    code = "invalid_transition"


class BadRequest(ConveyorError):
    """The request is malformed."""

    code = "bad_request"


class LastAdminKey(Conflict):
    """The last active admin key cannot be revoked; create another admin key first."""

    code = "last_admin_key"


class InvalidRequest(ConveyorError):
    """The request is not valid."""

    code = "invalid_request"


class PayloadTooLarge(ConveyorError):
    """The upload is larger than the configured maximum."""

    code = "payload_too_large"


class Unauthenticated(ConveyorError):
    """A valid API key is required (Authorization: Bearer <key>)."""

    code = "unauthenticated"


class RateLimited(ConveyorError):
    """Too many failed authentications from your address; try again later."""

    code = "rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class Forbidden(ConveyorError):
    """Your API key's role does not allow this action."""

    code = "forbidden"


class DependencyUnavailable(ConveyorError):
    """A service Conveyor depends on is unavailable."""

    code = "dependency_unavailable"


class DatabaseUnavailable(DependencyUnavailable):
    """The database is unavailable; try again shortly."""

    code = "database_unavailable"


class BrokerUnavailable(DependencyUnavailable):
    """The message broker (Redis) is unavailable."""

    code = "broker_unavailable"


class LeaseLost(ConveyorError):
    """This worker no longer holds the job's lease; another attempt owns it."""

    code = "lease_lost"


class JobCancelled(ConveyorError):
    """The job was cancelled."""

    code = "cancelled"


class JobFailed(ConveyorError):
    """The job failed."""

    code = "job_failed"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        where: dict[str, Any] | None = None,
    ):
        super().__init__(message, where=where)
        if code is not None:
            self.code = code  # type: ignore[misc]


class TimeLimitExceeded(JobFailed):
    """The job ran past its time limit and was stopped."""

    code = "time_limit_exceeded"
