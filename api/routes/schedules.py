"""/v1/schedules: periodic jobs (operator or admin). Stored in PostgreSQL and fired by the
tick every API and worker process runs (core.schedules.tick); each firing's job runs as
the schedule's owner."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from api.deps import AppSettings, Importers, OperatorPrincipal, ScheduleId, Sessions
from api.schemas.problems import problem_responses
from api.schemas.schedules import (
    FiringOut,
    FiringPage,
    ScheduleCreate,
    ScheduleList,
    ScheduleOut,
    ScheduleUpdate,
)
from core import api_keys, db, page_cursor
from core.api_keys import Principal, Role
from core.errors import Forbidden, InvalidRequest
from core.imports.registry import ImporterRegistry
from core.schedules import store
from core.schedules.template import JobTemplate, normalise
from core.settings import Settings

router = APIRouter(
    prefix="/v1/schedules",
    tags=["schedules"],
    responses=problem_responses(401, 403, 422, 503),
)


def _owner(session: Session, caller: Principal, owner_id: uuid.UUID | None) -> Principal:
    """The principal the jobs run as: the caller, or (admins only) another active key."""
    if owner_id is None or owner_id == caller.id:
        return caller
    if not caller.role.allows(Role.admin):
        raise Forbidden("Only an admin may create schedules that run as another API key.")
    owner = api_keys.active_principal(session, owner_id)
    if owner is None:
        raise InvalidRequest(f"No active API key {owner_id}.", where={"field": "owner"})
    return owner


def _stored_template(job: dict[str, Any]) -> JobTemplate:
    """A stored template back as a request, to check it again for a new owner."""
    if job["kind"] == "import":
        return JobTemplate(
            kind="import",
            importer=job["importer"],
            inbox_pattern=job["inbox_pattern"],
            options=job.get("options") or None,
        )
    return JobTemplate(kind=job["kind"], params=job["params"])


@router.post(
    "", status_code=201, summary="Create a schedule", responses=problem_responses(400, 404, 409)
)
def create_schedule(
    body: ScheduleCreate,
    response: Response,
    sessions: Sessions,
    settings: AppSettings,
    importers: Importers,
    principal: OperatorPrincipal,
) -> ScheduleOut:
    timing = store.check_timing(body.cron, body.interval_seconds, body.timezone)
    with db.transaction(sessions) as session:
        owner = _owner(session, principal, body.owner)
        job = normalise(body.job, settings=settings, importers=importers, owner=owner)
        schedule = store.create(
            session,
            name=body.name,
            timing=timing,
            job=job,
            owner_id=owner.id,
            catch_up=body.catch_up,
            overlap=body.overlap,
            paused=body.paused,
        )
        out = ScheduleOut.from_schedule(schedule)
    response.headers["Location"] = f"/v1/schedules/{out.id}"
    return out


@router.get("", summary="List schedules (or find one by name)")
def list_schedules(
    sessions: Sessions,
    _: OperatorPrincipal,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    name: Annotated[
        str | None, Query(max_length=100, description="Only the schedule with this name.")
    ] = None,
) -> ScheduleList:
    with db.transaction(sessions) as session:
        schedules = store.list_all(session, limit=limit, name=name)
        return ScheduleList(items=[ScheduleOut.from_schedule(s) for s in schedules])


@router.get("/{schedule_id}", summary="Get a schedule", responses=problem_responses(404))
def get_schedule(schedule_id: ScheduleId, sessions: Sessions, _: OperatorPrincipal) -> ScheduleOut:
    with db.transaction(sessions) as session:
        return ScheduleOut.from_schedule(store.get(session, schedule_id))


def _apply_update(
    session: Session,
    schedule_id: uuid.UUID,
    body: ScheduleUpdate,
    *,
    principal: Principal,
    settings: Settings,
    importers: ImporterRegistry,
) -> ScheduleOut:
    current = store.get(session, schedule_id, lock=True)
    given = body.model_fields_set
    timing = None
    if given & {"cron", "interval_seconds", "timezone"}:
        cron, interval = current.cron, current.interval_seconds
        if "cron" in given or "interval_seconds" in given:  # one replaces the other
            cron, interval = body.cron, body.interval_seconds
        timing = store.check_timing(cron, interval, body.timezone or current.timezone)
    changes: dict[str, Any] = {}
    for name in ("name", "catch_up", "overlap"):
        if name in given and getattr(body, name) is not None:
            changes[name] = getattr(body, name)
    if "owner" in given or "job" in given:
        owner = _owner(session, principal, body.owner or current.owner_id)
        template = body.job or _stored_template(current.job)
        changes["job"] = normalise(template, settings=settings, importers=importers, owner=owner)
        changes["owner_id"] = owner.id
    schedule = store.update(session, current, timing=timing, changes=changes)
    return ScheduleOut.from_schedule(schedule)


@router.patch(
    "/{schedule_id}",
    summary="Change a schedule",
    description="Only the fields given change; a new timing counts fire times from now.",
    responses=problem_responses(400, 404, 409),
)
def update_schedule(
    schedule_id: ScheduleId,
    body: ScheduleUpdate,
    sessions: Sessions,
    settings: AppSettings,
    importers: Importers,
    principal: OperatorPrincipal,
) -> ScheduleOut:
    with db.transaction(sessions) as session:
        return _apply_update(
            session, schedule_id, body, principal=principal, settings=settings, importers=importers
        )


@router.delete(
    "/{schedule_id}",
    status_code=204,
    summary="Delete a schedule and its firings (its jobs stay)",
    responses=problem_responses(404),
)
def delete_schedule(schedule_id: ScheduleId, sessions: Sessions, _: OperatorPrincipal) -> Response:
    with db.transaction(sessions) as session:
        store.delete(session, schedule_id)
    return Response(status_code=204)


@router.post("/{schedule_id}/pause", summary="Pause a schedule", responses=problem_responses(404))
def pause_schedule(
    schedule_id: ScheduleId, sessions: Sessions, _: OperatorPrincipal
) -> ScheduleOut:
    with db.transaction(sessions) as session:
        return ScheduleOut.from_schedule(store.set_paused(session, schedule_id, paused=True))


@router.post(
    "/{schedule_id}/resume",
    summary="Resume a schedule",
    description="Fire times count from now: what fell due while paused does not fire.",
    responses=problem_responses(404),
)
def resume_schedule(
    schedule_id: ScheduleId, sessions: Sessions, _: OperatorPrincipal
) -> ScheduleOut:
    with db.transaction(sessions) as session:
        return ScheduleOut.from_schedule(store.set_paused(session, schedule_id, paused=False))


def _fire_time(parts: list[str]) -> datetime:
    (fire_time,) = parts
    return datetime.fromisoformat(fire_time)


@router.get(
    "/{schedule_id}/firings",
    summary="A schedule's firings, newest first, with the jobs they made",
    responses=problem_responses(404),
)
def list_firings(
    schedule_id: ScheduleId,
    sessions: Sessions,
    _: OperatorPrincipal,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> FiringPage:
    before = page_cursor.decode(cursor, _fire_time) if cursor is not None else None
    with db.transaction(sessions) as session:
        page, next_before = store.firings(session, schedule_id, limit=limit, before=before)
    return FiringPage(
        items=[FiringOut.from_firing(firing) for firing in page],
        next_cursor=None if next_before is None else page_cursor.encode(next_before.isoformat()),
    )
