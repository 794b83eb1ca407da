"""Driving ``wrk`` (Debian package ``wrk``; scripts/setup installs it): a C load generator
that is not the bottleneck, unlike a Python client on the same two cores."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def _parse(output: str) -> WrkResult:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    return WrkResult(rate, p50, p99, total, errors)


def run(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    body: str | None = None,
    threads: int = 1,
    pause_ms: float = 0,
) -> WrkResult:
    """``pause_ms``: each connection waits this long after an answer before its next
    request (a client that submits now and then, not back to back)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: run scripts/setup (or apt-get install wrk)")
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = [[{body}]]")  # a Lua long string: no escaping needed
    if pause_ms:
        lines.append(f"function delay() return {pause_ms:g} end")
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "request.lua"
        script.write_text("\n".join(lines) + "\n")
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{round(seconds)}s", "--latency"]
        argv += ["-s", str(script), url]
        output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return _parse(output)
