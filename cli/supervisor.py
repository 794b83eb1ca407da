"""Run a few long-lived processes together and stop them together (``conveyor run``).

Each child gets its own process group (so a terminal's Ctrl-C reaches only the supervisor,
and stopping a child also reaches its own children, e.g. a prefork worker's pool). On SIGINT
or SIGTERM every group gets SIGTERM, then SIGKILL after ``stop_timeout``; a second signal
kills at once. A child that dies on its own stops everything with a non-zero exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import structlog

log = structlog.stdlib.get_logger("conveyor.supervisor")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class ChildSpec:
    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Child:
    spec: ChildSpec
    popen: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        """Signal the child's whole process group (its pid is the group id)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        stop_timeout: float = 20.0,
        poll_interval: float = 0.2,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._specs = list(specs)
        self._stop_timeout = stop_timeout
        self._poll_interval = poll_interval
        self._env = dict(env) if env is not None else None
        self._children: list[Child] = []
        self._requested: int | None = None
        self._stopping = False
        self._previous_handlers: dict[int, Any] = {}

    @property
    def children(self) -> list[Child]:
        return list(self._children)

    def run(self) -> int:
        self.start()
        return self.wait()

    def start(self) -> None:
        """Install the signal handlers, then start every child (all or none)."""
        self._install_signal_handlers()
        try:
            for spec in self._specs:
                self._children.append(self._spawn(spec))
        except BaseException:
            self.stop()
            self._restore_signal_handlers()
            raise

    def wait(self) -> int:
        """Block until a stop signal (exit 0) or an unexpected child exit (exit 1)."""
        try:
            while True:
                if self._requested is not None:
                    log.info("stopping", signal=signal.Signals(self._requested).name)
                    self.stop()
                    return 0
                dead = self._first_dead()
                if dead is not None:
                    log.error(
                        "process exited unexpectedly; stopping the others",
                        process=dead.spec.name,
                        pid=dead.popen.pid,
                        returncode=dead.popen.returncode,
                    )
                    self.stop()
                    return 1
                time.sleep(self._poll_interval)
        finally:
            self._restore_signal_handlers()

    def stop(self) -> None:
        """SIGTERM every group, wait up to ``stop_timeout`` in total, SIGKILL what is left."""
        self._stopping = True
        for child in self._children:
            if child.alive:
                child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        for child in self._children:
            self._wait_or_kill(child, deadline)
        for child in self._children:
            child.signal_group(signal.SIGKILL)  # orphans left in the group (pool processes)

    def _spawn(self, spec: ChildSpec) -> Child:
        popen = subprocess.Popen(
            list(spec.argv), env=self._env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.info("started", process=spec.name, pid=popen.pid)
        return Child(spec, popen)

    def _first_dead(self) -> Child | None:
        return next((child for child in self._children if not child.alive), None)

    def _wait_or_kill(self, child: Child, deadline: float) -> None:
        try:
            child.popen.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("did not stop in time; killing", process=child.spec.name)
            child.signal_group(signal.SIGKILL)
            child.popen.wait()
        log.info("stopped", process=child.spec.name, returncode=child.popen.returncode)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping or self._requested is not None:
            for child in self._children:  # second signal: no more waiting
                child.signal_group(signal.SIGKILL)
            return
        self._requested = signum

    def _install_signal_handlers(self) -> None:
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()
