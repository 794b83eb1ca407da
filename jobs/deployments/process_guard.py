"""The guard: ``python -m jobs.deployments.process_guard [options] -- ansible-playbook ...``.

ansible-runner starts this (its ``binary``) instead of ``ansible-playbook``, under pexpect in
a session of its own. It runs ansible-playbook as its child and owns the whole tree under it:

- **Parent death.** ``PR_SET_PDEATHSIG`` delivers SIGUSR1 when the worker process that
  started us dies (even by SIGKILL); we then SIGKILL every descendant at once. Without this,
  ansible-playbook (which ignores SIGHUP) runs on under init after a killed worker.
- **Subreaper.** Ansible's forked workers call ``setsid()`` and ssh's ControlPersist master
  double-forks, so neither a process group nor "my children" finds them all. As a child
  subreaper, every orphaned descendant is re-parented to us, so walking the parent links in
  /proc from our pid finds the whole tree, and nothing outlives the run.
- **Cancel.** SIGTERM: SIGTERM to ansible-playbook, SIGKILL to every descendant when it
  exits or after ``--grace`` seconds, whichever comes first.
- **Limits.** The tree's memory (proportional set size, so forks sharing pages count once)
  and CPU time are sampled every ``POLL_SECONDS``; past ``--memory-mb`` or ``--cpu-seconds``
  the tree is killed and the reason reported. Each process also runs under rlimits as a
  backstop (RLIMIT_AS at a multiple of the memory limit, for an allocation faster than the
  sampling; RLIMIT_CPU): cgroup v2 would hold the tree as a whole, but needs a delegated
  memory controller, which machines like this one (cgroup v1) do not have.

How it ended goes to ``--status-file`` as JSON, for the worker to classify the run. Only the
standard library is imported: this starts for every run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from types import FrameType

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
MIB = 1 << 20
# RLIMIT_CPU's soft limit sends SIGXCPU (fatal by default); the hard limit, this much later,
# SIGKILL for a process that catches SIGXCPU.
CPU_HARD_MARGIN = 2
# The tree's memory and CPU are sampled this often; RLIMIT_AS (a multiple of the limit) stops
# an allocation too fast for the sampling.
POLL_SECONDS = 0.1
ADDRESS_SPACE_FACTOR = 4


def _proc_parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (children first found, then theirs)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _proc_parents().items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    frontier = [root]
    while frontier:
        below = children.get(frontier.pop(), [])
        found.extend(below)
        frontier.extend(below)
    return found


def tree_memory_mb(pids: list[int]) -> float:
    """Proportional set size of the processes, in MiB: shared pages (forks of one
    ansible-playbook share most of theirs) are split between them, not counted again."""
    total_kb = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
                for line in rollup:
                    if line.startswith(b"Pss:"):
                        total_kb += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
    return total_kb / 1024


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU used by the tree: live processes (with their reaped children) and our own
    reaped children."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(os.times()[2:4])
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        # utime, stime, cutime, cstime are fields 14-17 of stat; 12-15 after "pid (comm) "
        total += sum(int(value) for value in fields[11:15]) / ticks
    return total


def kill_tree(root: int, sig: int = signal.SIGKILL) -> int:
    """Signal every descendant of ``root``; returns how many were signalled."""
    count = 0
    for pid in descendants(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            count += 1
    return count


class Guard:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.child = 0
        self.reason: str | None = None

    def _on_cancel(self, signum: int, _: FrameType | None) -> None:
        if self.reason is None:
            self.reason = "cancelled"
        if self.child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signal.SIGTERM)
        signal.alarm(max(1, int(self.args.grace + 0.999)))

    def _on_parent_death(self, signum: int, _: FrameType | None) -> None:
        self.reason = "parent_died"
        kill_tree(os.getpid())

    def _on_grace_over(self, signum: int, _: FrameType | None) -> None:
        kill_tree(os.getpid())

    def _limit_child(self) -> None:
        if self.args.memory_mb:
            limit = self.args.memory_mb * MIB * ADDRESS_SPACE_FACTOR
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if self.args.cpu_seconds:
            cpu = self.args.cpu_seconds
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + CPU_HARD_MARGIN))

    def start(self) -> None:
        self.child = os.fork()
        if self.child == 0:
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGALRM):
                    signal.signal(sig, signal.SIG_DFL)
                self._limit_child()
                os.execvp(self.args.command[0], self.args.command)
            except BaseException as error:  # exec failed: report like a shell would
                print(f"process_guard: cannot run {self.args.command[0]}: {error}", file=sys.stderr)
            finally:
                os._exit(127)

    def wait(self) -> int:
        """Reap until ansible-playbook ends, watching the tree's memory and CPU meanwhile;
        then end the rest of the tree. Returns ansible-playbook's wait status."""
        status: int | None = None
        while status is None:
            status = self._reap()
            if status is None:
                self._enforce_limits()
                time.sleep(POLL_SECONDS)
        kill_tree(os.getpid())
        self._reap_rest(deadline=time.monotonic() + 5)
        return status

    def _reap(self) -> int | None:
        """Reap whatever ended (orphans re-parented to us too); the main child's status."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid == 0:
                return None
            if pid == self.child:
                return wait_status

    def _enforce_limits(self) -> None:
        if self.reason is not None:
            return
        tree = descendants(os.getpid())
        if self.args.memory_mb and tree_memory_mb(tree) > self.args.memory_mb:
            self.reason = "memory_limit"
        elif self.args.cpu_seconds and tree_cpu_seconds(tree) > self.args.cpu_seconds:
            self.reason = "cpu_limit"
        else:
            return
        kill_tree(os.getpid())

    def _reap_rest(self, *, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                kill_tree(os.getpid())
                time.sleep(0.02)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _write_status(path: str, report: Mapping[str, object]) -> None:
    """Written whole, then renamed: the worker never reads half a file."""
    try:
        with open(path + ".tmp", "w") as out:
            json.dump(report, out)
        os.replace(path + ".tmp", path)
    except OSError as error:
        if error.errno != errno.ENOENT:  # the run dir is already gone: nobody will read it
            raise


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="process_guard")
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--status-file", required=True)
    parser.add_argument("--memory-mb", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command to run")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    guard = Guard(args)
    signal.signal(signal.SIGUSR1, guard._on_parent_death)
    _prctl(PR_SET_PDEATHSIG, signal.SIGUSR1)
    if os.getppid() != args.parent_pid:  # the worker died before we asked to be told
        return 128 + signal.SIGKILL
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, guard._on_cancel)
    signal.signal(signal.SIGALRM, guard._on_grace_over)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # pexpect's close() sends it first
    _write_status(args.status_file, {"pid": os.getpid(), "running": True})
    guard.start()
    status = guard.wait()
    signalled = os.WIFSIGNALED(status)
    report = {
        "pid": os.getpid(),
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if signalled else None,
        "reason": guard.reason,
    }
    _write_status(args.status_file, report)
    return 128 + os.WTERMSIG(status) if signalled else os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
