"""A schedule's job template: what each firing submits, validated once when the schedule is
created or changed, through the same models the job kinds' own endpoints use (diagnostic
params, DeploymentSpec, ImportParams), and turned into a job at each firing.

Stored form (``schedules.job``): ``{"kind": "noop"|"sleep"|"deployment", "params": {...}}``
with params as validated (defaults of the params themselves filled in), or for an inbox
import ``{"kind": "import", "importer", "inbox_pattern", "options": {...}, "reveal_table"}``.

Operator limits are applied again at every firing, with the settings of that moment: a
limit the template leaves out gets the operator's current default (a deployment's
``limits`` and ``retry``, a job's ``timeout_seconds``), and one it asks for above the
current maximum makes the firing fail with that reason, recorded on the firing, as the
same request to POST /v1/deployments or /v1/jobs would be refused. Clamping it instead
would run a deployment with less time or memory than its author asked for, so it could
stop half-way through a playbook: a refused firing is visible and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.api_keys import Principal
from core.deployments.spec import KIND as DEPLOYMENT_KIND
from core.deployments.spec import DeploymentSpec
from core.diagnostics import PARAMS_MODELS
from core.errors import BadRequest, InvalidRequest
from core.imports.options import ImportOptions, ImportParams, StoredFile
from core.imports.registry import ImporterNotFound, ImporterRegistry
from core.imports.uploads import IMPORT_KIND
from core.lifecycle import commands
from core.schedules.inbox import check_pattern
from core.settings import Settings

ScheduleKind = Literal["noop", "sleep", "import", "deployment"]


class JobTemplate(BaseModel):
    """``job`` of a schedule request."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"kind": "sleep", "params": {"seconds": 1}},
                {"kind": "import", "importer": "products", "inbox_pattern": "products-*.csv"},
            ]
        },
    )

    kind: ScheduleKind
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="noop/sleep: as POST /v1/jobs; deployment: as POST /v1/deployments.",
    )
    importer: str | None = Field(default=None, max_length=200)
    inbox_pattern: str | None = Field(
        default=None,
        max_length=200,
        description="import: file names in CONVEYOR_IMPORT_INBOX (glob, no '/' or '..').",
    )
    options: dict[str, Any] | None = Field(
        default=None, description="import: mode, error_threshold, delimiter, encoding."
    )


def _invalid(error: ValidationError, prefix: str) -> InvalidRequest:
    first = error.errors()[0]
    where = ".".join([prefix, *(str(part) for part in first["loc"])])
    return InvalidRequest(f"{where}: {first['msg']}", where={"field": where})


def _refuse_import_fields(template: JobTemplate) -> None:
    for name in ("importer", "inbox_pattern", "options"):
        if getattr(template, name) is not None:
            raise InvalidRequest(
                f"job.{name} is only for import schedules.", where={"field": f"job.{name}"}
            )


def normalise(
    template: JobTemplate, *, settings: Settings, importers: ImporterRegistry, owner: Principal
) -> dict[str, Any]:
    """The stored form of ``template``, run as ``owner``; InvalidRequest/BadRequest (with
    ``where.field``) when a firing could not submit it."""
    if template.kind == IMPORT_KIND:
        return _normalise_import(template, settings=settings, importers=importers, owner=owner)
    _refuse_import_fields(template)
    if template.kind == DEPLOYMENT_KIND:
        try:
            spec = DeploymentSpec.model_validate(template.params)
        except ValidationError as error:
            raise _invalid(error, "job.params") from error
        try:
            spec.with_defaults(settings)  # within today's maxima; applied again at each firing
        except InvalidRequest as error:
            field = f"job.params.{(error.where or {}).get('field')}"
            raise InvalidRequest(error.message, where={"field": field}) from None
        # Stored as asked: limits left out take the operator's default of each firing.
        return {"kind": DEPLOYMENT_KIND, "params": spec.model_dump(mode="json")}
    try:
        params = PARAMS_MODELS[template.kind].model_validate(template.params).model_dump()
    except ValidationError as error:
        raise _invalid(error, "job.params") from error
    commands.time_limit(
        settings, template.kind, params.get("timeout_seconds"), field="job.params.timeout_seconds"
    )
    return {"kind": template.kind, "params": params}


def _normalise_import(
    template: JobTemplate, *, settings: Settings, importers: ImporterRegistry, owner: Principal
) -> dict[str, Any]:
    if template.params:
        raise InvalidRequest(
            "An import schedule takes importer, inbox_pattern and options, not params.",
            where={"field": "job.params"},
        )
    if settings.import_inbox is None:
        raise BadRequest(
            "No import inbox is configured (CONVEYOR_IMPORT_INBOX).",
            where={"field": "job.inbox_pattern"},
        )
    if template.importer is None:
        raise InvalidRequest("job.importer is required.", where={"field": "job.importer"})
    if template.inbox_pattern is None:
        raise InvalidRequest("job.inbox_pattern is required.", where={"field": "job.inbox_pattern"})
    pattern = check_pattern(template.inbox_pattern)
    try:
        options = ImportOptions.model_validate(template.options or {})
    except ValidationError as error:
        raise _invalid(error, "job.options") from error
    try:
        importer = importers.get_for(template.importer, owner)
    except ImporterNotFound as error:
        raise ImporterNotFound(error.message, where={"field": "job.importer"}) from None
    resolved = options.for_importer(importer, field="job.options.mode")
    # Check delimiter and encoding now, with the same model the worker reads, so a firing
    # never creates a job that cannot run.
    try:
        resolved.params(
            importer=importer.name,
            upload=StoredFile(path="-", sha256="-", size=0),
            reveal_table=importer.may_read_table(owner),
        )
    except ValidationError as error:
        raise _invalid(error, "job.options") from error
    return {
        "kind": IMPORT_KIND,
        "importer": importer.name,
        "inbox_pattern": pattern,
        "options": resolved.model_dump(exclude_none=True),
        "reveal_table": importer.may_read_table(owner),
    }


@dataclass(frozen=True)
class JobSpec:
    """What a firing submits: one job (several for an inbox import, one per file)."""

    kind: str
    params: dict[str, Any]
    time_limit_seconds: float
    lock_keys: list[str] = field(default_factory=list)  # deployment targets


def job_spec(job: dict[str, Any], settings: Settings, upload: StoredFile | None) -> JobSpec:
    """The job a firing submits from the stored template (``upload``: an import's file)."""
    kind = str(job["kind"])
    if kind == IMPORT_KIND:
        assert upload is not None
        import_params = ImportParams(
            importer=job["importer"],
            upload=upload,
            reveal_table=bool(job.get("reveal_table", True)),
            **job.get("options", {}),
        )
        return JobSpec(
            IMPORT_KIND,
            import_params.model_dump(mode="json"),
            settings.time_limit_for(IMPORT_KIND),
        )
    params = dict(job["params"])
    if kind == DEPLOYMENT_KIND:
        # Today's defaults and maxima (see the module docstring); InvalidRequest past one.
        spec = DeploymentSpec.model_validate(params).with_defaults(settings)
        return JobSpec(
            kind,
            spec.model_dump(mode="json"),
            float(spec.limits.timeout_seconds or 0),
            lock_keys=spec.lock_keys,
        )
    limit = commands.time_limit(settings, kind, params.get("timeout_seconds"), field="params")
    return JobSpec(kind, params, limit)
