"""Reading, validating and planning batches in a forked child process, a batch ahead.

Parsing and validating take about as long as PostgreSQL takes to load the rows, so the two
should overlap. In a thread they barely do: the parser holds the GIL in C calls of a few
milliseconds, and the thread committing batches needs the GIL back after every database
round trip (measured: loading took more than twice as long as without the parser running). A
forked child has its own GIL. Batches come back pickled through a pipe, slim (the COPY
payload and counts, see PreparedBatch), and the pipe bounds how far ahead the child runs.

The child resets the signal handlers it inherited (it must not run Celery's), never touches
the parent's database or broker connections, and leaves through ``os._exit`` (no finalizer
may close an inherited socket). If the parent dies, the child's next write fails and it
exits; if the parent stops early (cancel, failure), it kills the child. Forking is safe in
the prefork and solo pools; under the threads pool other threads' locks are copied too, which
the child avoids needing (it does not log and takes no lock but its pipe's).
"""

from __future__ import annotations

import gc
import os
import pickle
import signal
import traceback
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import structlog

from core.imports.failures import ImportFailed, ImportFailureCode

T = TypeVar("T")
log = structlog.get_logger(__name__)

PIPE_BUFFER = 1 << 20
_RESET_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


@dataclass(frozen=True)
class _Item(Generic[T]):
    value: T


@dataclass(frozen=True)
class _End:
    failure: tuple[str, str, dict[str, Any] | None] | None = None  # an ImportFailed
    crash: str | None = None  # any other exception, as a traceback


class ReaderCrashed(RuntimeError):
    """The reader process failed unexpectedly (a bug); the job fails with internal_error."""


def run_in_child(produce: Callable[[], Iterator[T]]) -> Generator[T, None, None]:
    """Yield what ``produce()`` yields, computed in a forked child process."""
    read_fd, write_fd = os.pipe()
    gc.freeze()  # the child's collections must not walk (and so copy) the inherited heap
    pid = os.fork()
    if pid == 0:
        _child(produce, read_fd, write_fd)
    gc.unfreeze()
    os.close(write_fd)
    try:
        with os.fdopen(read_fd, "rb", buffering=PIPE_BUFFER) as pipe:
            yield from _receive(pipe)
    finally:
        _reap(pid)


def _receive(pipe: Any) -> Iterator[T]:
    while True:
        try:
            message = pickle.load(pipe)
        except EOFError:
            raise ReaderCrashed("The import's reader process exited unexpectedly.") from None
        if isinstance(message, _Item):
            yield message.value
            continue
        assert isinstance(message, _End)
        if message.failure is not None:
            code, text, where = message.failure
            raise ImportFailed(ImportFailureCode(code), text, where=where)
        if message.crash is not None:
            raise ReaderCrashed(f"The import's reader process failed:\n{message.crash}")
        return


def _child(produce: Callable[[], Iterator[Any]], read_fd: int, write_fd: int) -> NoReturn:
    code = 0
    try:
        os.close(read_fd)
        for number in _RESET_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        # What the child allocates is acyclic (lists of strings) and freed by reference
        # counting; collections would only cost time.
        gc.disable()
        with os.fdopen(write_fd, "wb", buffering=PIPE_BUFFER) as pipe:
            _send_all(produce, pipe)
    except BrokenPipeError:
        code = 1  # the parent stopped reading (it finished early, or died)
    except BaseException:
        code = 2
    finally:
        os._exit(code)


def _send_all(produce: Callable[[], Iterator[Any]], pipe: Any) -> None:
    try:
        for value in produce():
            pickle.dump(_Item(value), pipe, protocol=pickle.HIGHEST_PROTOCOL)
            # Without a flush, a batch's last bytes wait in the buffer until the next batch
            # is produced, and parent and child end up taking turns instead of overlapping.
            pipe.flush()
        end = _End()
    except ImportFailed as error:
        end = _End(failure=(error.code, error.message, error.where))
    except BrokenPipeError:
        raise
    except BaseException:
        end = _End(crash=traceback.format_exc())
    pickle.dump(end, pipe, protocol=pickle.HIGHEST_PROTOCOL)


def _reap(pid: int) -> None:
    """Wait for the child (killing it first if it is still working) and log its peak RSS."""
    try:
        done, _, usage = os.wait4(pid, os.WNOHANG)
        if done == 0:
            os.kill(pid, signal.SIGKILL)
            _, _, usage = os.wait4(pid, 0)
    except ChildProcessError:  # already reaped by someone else's SIGCHLD handler
        return
    log.info(
        "import.reader_finished",
        reader_pid=pid,
        reader_max_rss_kb=usage.ru_maxrss,
        reader_cpu_seconds=round(usage.ru_utime + usage.ru_stime, 2),
    )
