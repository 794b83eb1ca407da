"""A loopback git server over HTTP that refuses clients without the token: ``git
http-backend`` (the real smart-HTTP CGI) behind a small WSGI server checking HTTP basic auth,
whose password must be the token (as GitHub takes a token). Serves bare repositories made
with ``add_repo``; counts refused requests so tests can see a clone was turned away."""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "PATH": "/usr/bin:/bin",
}
CGI_PASSTHROUGH = ("REQUEST_METHOD", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class GitServer:
    def __init__(self, root: Path, token: str) -> None:
        self.root = root
        self.token = token
        self.refused = 0
        self.served = 0
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_port}"

    def add_repo(self, name: str, files: dict[str, str], *, branch: str = "main") -> str:
        """A bare repository ``name`` whose one commit on ``branch`` holds ``files``; its URL."""
        work = self.root / f"{name}-work"
        work.mkdir(parents=True)
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        for args in (
            ["init", "-q", "-b", branch],
            ["add", "-A"],
            ["commit", "-q", "-m", "playbooks"],
        ):
            subprocess.run(["git", *args], cwd=work, env=GIT_ENV, check=True)
        bare = self.root / f"{name}.git"
        subprocess.run(
            ["git", "clone", "-q", "--bare", str(work), str(bare)], env=GIT_ENV, check=True
        )
        return f"{self.url}/{name}.git"

    def _authorized(self, environ: dict[str, Any]) -> bool:
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return password == self.token

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self._authorized(environ):
            self.refused += 1
            start_response("401 Unauthorized", [("WWW-Authenticate", 'Basic realm="git"')])
            return [b"token required\n"]
        self.served += 1
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        env = {
            **GIT_ENV,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": environ.get("PATH_INFO", ""),
            "REMOTE_USER": "token",
            "GIT_PROTOCOL": environ.get("HTTP_GIT_PROTOCOL", ""),
            **{key: str(environ.get(key) or "") for key in CGI_PASSTHROUGH},
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, content = done.stdout.partition(b"\r\n\r\n")
        status = "200 OK"
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = value.strip()
            elif name:
                headers.append((name, value.strip()))
        start_response(status, headers)
        return [content]

    def start(self) -> GitServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._server = make_server("127.0.0.1", 0, self._app, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
