"""Cheap denial of service, tried on the real API process: huge bodies and heads without a
key, metrics scrapes on a table of a million jobs, and fifty stalled CSV downloads."""

from __future__ import annotations

import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from core import db
from core.api_keys import Role
from core.settings import Settings
from tests import services

pytestmark = pytest.mark.e2e

MIB = 1 << 20
JSON = {"Content-Type": "application/json"}
ATTACK_BYTES = 100 * MIB


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def api_address(platform: services.Platform) -> tuple[str, int]:
    assert platform.api_url is not None
    host, port = platform.api_url.removeprefix("http://").split(":")
    return host, int(port)


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, object]]:
    """Status and JSON body of one response (Content-Length framed)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", len(body)))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), {"headers": headers, **json.loads(body or b"{}")}


def stream_chunked(sock: socket.socket, total: int) -> int:
    """Send up to ``total`` bytes of chunked JSON, stopping as soon as the server answers
    or closes; returns how many bytes went out."""
    piece = b"[" + b"1," * (32 * 1024 - 1) + b"1]"
    frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    sent = 0
    while sent < total:
        readable, writable, _ = select.select([sock], [sock], [], 10)
        if readable or not writable:
            break
        try:
            sock.sendall(frame)
        except OSError:  # reset: the server is done with us
            break
        sent += len(piece)
    return sent


def post_head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def test_a_100_mib_unauthenticated_json_body_is_refused_without_growing_the_api(platform):
    api = platform.start_api()
    address = api_address(platform)
    for _ in range(20):  # warm up: imports, pools, allocator arenas
        httpx.post(f"{platform.api_url}/v1/jobs", json={"kind": "noop"})
    before = rss_kib(api.popen.pid)

    with closing(socket.create_connection(address)) as declared:
        declared.sendall(post_head("/v1/jobs", f"Content-Length: {ATTACK_BYTES}\r\n"))
        status, problem = read_response(declared)  # answered before a byte of body is sent
    assert status == 413
    assert problem["code"] == "payload_too_large"

    sent = 0
    for path in ("/v1/api-keys", "/v1/jobs"):
        with closing(socket.create_connection(address)) as chunked:
            chunked.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            chunked.sendall(post_head(path, "Transfer-Encoding: chunked\r\n"))
            sent = stream_chunked(chunked, ATTACK_BYTES)
            try:
                status, problem = read_response(chunked)
            except (ConnectionResetError, json.JSONDecodeError):
                status = 0  # reset while the response was in flight: checked below
        assert sent < 16 * MIB, f"the server read {sent / MIB:.0f} MiB of an unwanted body"
        assert status in (413, 0)
    growth_mib = (rss_kib(api.popen.pid) - before) / 1024
    print(f"API RSS growth after 3 attacks of 100 MiB: {growth_mib:.1f} MiB; sent {sent / MIB:.1f}")
    assert growth_mib < 4
    assert httpx.get(f"{platform.api_url}/health/live").status_code == 200


def test_chunked_body_past_the_cap_answers_413_problem(platform):
    platform.start_api()
    body = b'{"kind": "noop", "params": {"pad": "' + b"x" * (2 * MIB) + b'"}}'

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    try:
        response = httpx.post(f"{platform.api_url}/v1/jobs", content=chunks(), timeout=10)
    except httpx.WriteError:
        pytest.skip("reset before the response could be read")  # pragma: no cover
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "payload_too_large"


def test_request_heads_are_bounded(platform):
    api = platform.start_api()
    before = rss_kib(api.popen.pid)

    with closing(socket.create_connection(api_address(platform))) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        sent = 0
        try:
            while sent < 64 * MIB:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass
        try:
            status, problem = read_response(sock)
        except (ConnectionResetError, json.JSONDecodeError):
            status, problem = 0, {}

    assert sent < 8 * MIB
    assert status in (431, 0)
    assert problem.get("code", "headers_too_large") == "headers_too_large"
    assert (rss_kib(api.popen.pid) - before) / 1024 < 4
    big_but_fine = httpx.get(f"{platform.api_url}/health/live", headers={"X-Pad": "a" * 30_000})
    assert big_but_fine.status_code == 200
    with httpx.Client(base_url=platform.api_url) as client:  # bodies are not heads
        for _ in range(3):  # on one kept-alive connection
            body = client.post("/v1/jobs", content=b" " * 900_000, headers=JSON)
            assert body.status_code in (401, 422)  # read as a body: not 431


def seed_jobs(sessions: db.Sessions, count: int) -> None:
    with db.transaction(sessions) as session:
        session.execute(
            sa.text(
                "INSERT INTO jobs (id, kind, status, params, request_fingerprint, created_at, "
                "dispatched_at) "
                "SELECT gen_random_uuid(), 'noop', "
                "(ARRAY['succeeded', 'succeeded', 'failed', 'cancelled'])[1 + i % 4], '{}', 'f', "
                "now() - make_interval(secs => i), now() "
                "FROM generate_series(1, :count) AS i"
            ),
            {"count": count},
        )


def timed(client: httpx.Client, path: str, calls: int, **kwargs: object) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        response = client.get(path, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text
    return time.perf_counter() - started


def test_metrics_scrapes_on_a_million_jobs_cost_about_what_liveness_costs(
    platform, sessions: db.Sessions
):
    seed_jobs(sessions, 1_000_000)
    platform.start_api()
    with httpx.Client(base_url=platform.api_url, timeout=30) as client:
        scrape = client.get("/metrics", headers=services.METRICS_HEADERS).text
        assert 'conveyor_jobs{status="succeeded"} 500000.0' in scrape
        assert 'conveyor_jobs{status="failed"} 250000.0' in scrape
        timed(client, "/health/live", 50)  # warm up both
        timed(client, "/metrics", 50, headers=services.METRICS_HEADERS)

        live = timed(client, "/health/live", 1_000)
        metrics = timed(client, "/metrics", 1_000, headers=services.METRICS_HEADERS)

    print(f"1,000 calls on 1M jobs: /metrics {metrics:.2f} s, /health/live {live:.2f} s")
    # A full count of the table takes ~100 ms here: 1,000 of them would be 100+ s.
    assert metrics <= live * 15


@contextmanager
def stalled_downloads(address: tuple[str, int], path: str, key: str, count: int):
    """``count`` clients that ask for the CSV and then stop reading (tiny receive windows)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(address)
            request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}"
            sock.sendall(request.encode() + b"\r\n\r\n")
            sockets.append(sock)
        for sock in sockets:  # each download has started streaming
            sock.settimeout(30)
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def seed_rejected_rows(sessions: db.Sessions, settings: Settings, rows: int) -> tuple[str, str]:
    """An import job of an admin key with ``rows`` rejected rows; (job id, key)."""
    key = services.new_api_key(sessions, settings, Role.admin)
    job_id = str(uuid.uuid4())
    with db.transaction(sessions) as session:
        session.execute(
            sa.text(
                "INSERT INTO jobs (id, kind, status, params, request_fingerprint, result) "
                "VALUES (:id, 'import', 'succeeded', '{}', 'f', "
                '\'{"columns": ["sku", "name", "description"]}\')'
            ),
            {"id": job_id},
        )
        session.execute(
            sa.text(
                'INSERT INTO import_errors (job_id, row, "column", code, message, value, raw) '
                "SELECT :id, i + 1, 'name', 'required', 'name is required', NULL, "
                "jsonb_build_array('SKU-' || i, '', repeat(md5(i::text), 64)) "
                "FROM generate_series(1, :rows) AS i"
            ),
            {"id": job_id, "rows": rows},
        )
    return job_id, key


def long_transactions(sessions: db.Sessions, *, older_than: float) -> int:
    """Transactions left open, waiting on their client, for longer than ``older_than``
    seconds (a busy statement of the recovery loop on a loaded machine is not one)."""
    with db.transaction(sessions) as session:
        return int(
            session.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state LIKE 'idle in transaction%' "
                    "AND xact_start < now() - make_interval(secs => :age) "
                    "AND pid <> pg_backend_pid()"
                ),
                {"age": older_than},
            )
            or 0
        )


def test_fifty_stalled_csv_downloads_leave_submits_working(
    platform, sessions: db.Sessions, settings: Settings
):
    # 10,000 rows of ~2 KB: 20 MB of CSV, far more than the socket buffers hold, in few pages.
    job_id, key = seed_rejected_rows(sessions, settings, 10_000)
    platform.start_api()
    address = api_address(platform)
    headers = {"Authorization": f"Bearer {key}"}
    path = f"/v1/jobs/{job_id}/errors?format=csv"

    with stalled_downloads(address, path, key, 50):
        time.sleep(5)  # let every download fill the socket buffers and stall
        # Streaming in one transaction, each stalled download would hold one open (and a
        # pooled connection: 50 of them exhaust the pool and submits time out).
        assert long_transactions(sessions, older_than=2) == 0
        slowest = 0.0
        with httpx.Client(base_url=platform.api_url, headers=headers, timeout=30) as client:
            for _ in range(20):
                started = time.perf_counter()
                response = client.post("/v1/jobs", json={"kind": "noop"})
                assert response.status_code == 202, response.text
                slowest = max(slowest, time.perf_counter() - started)
        print(f"20 submits during 50 stalled downloads: slowest {slowest * 1000:.0f} ms")

    with httpx.Client(base_url=platform.api_url, headers=headers, timeout=60) as client:
        full = client.get(path)
    assert full.status_code == 200
    assert full.text.count("\r\n") == 10_001  # header + every rejected row, across pages
