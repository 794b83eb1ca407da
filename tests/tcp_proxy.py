"""A TCP proxy a test can break: between platform processes and the real PostgreSQL (or any
server), so a test can make the database unreachable without touching the shared server.

- ``cut()``: close every proxied connection and refuse new ones (connection refused).
- ``blackhole()``: accept new connections but never answer (a hung server).
- ``restore()``: forward again, on the same port.
- ``trip_on(tripwire)``: watch what clients send; when the tripwire fires on a chunk, that
  chunk still reaches the server, the server's answer is swallowed, and the connection is
  closed: the client cannot know whether its last request (e.g. a COMMIT) took effect.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from types import TracebackType

from tests.services import free_port, wait_until


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._forwarding = True
        self._tripwire: Tripwire | None = None

    def trip_on(self, tripwire: Tripwire) -> None:
        """Cut the first connection whose client sends a chunk ``tripwire`` fires on (once)."""
        self._tripwire = tripwire

    def start(self) -> TcpProxy:
        self._listen(forwarding=True)
        return self

    def cut(self) -> None:
        """Close the listener and every connection: clients see resets, then refusals."""
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def blackhole(self) -> None:
        self.cut()
        self._listen(forwarding=False)

    def restore(self) -> None:
        self.cut()
        self._listen(forwarding=True)

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _listen(self, *, forwarding: bool) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The old listener is fully released only once its accept loop wakes up.
        wait_until(lambda: _bound(listener, self.port), timeout=5, message="proxy port")
        listener.listen(128)
        listener.settimeout(0.05)  # so the accept loop notices the listener was replaced
        with self._lock:
            self._listener = listener
            self._forwarding = forwarding
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            with self._lock:
                if self._listener is not listener:
                    return
                forwarding = self._forwarding
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if not forwarding:
                self._track(client)  # held open, never answered
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._track(client, upstream)
            link = _Link(client, upstream)
            threading.Thread(target=self._pump_requests, args=(link,), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client, link), daemon=True).start()

    def _pump_requests(self, link: _Link) -> None:
        """Client -> server, through the tripwire."""
        seen: dict[str, object] = {}  # the tripwire's notes about this connection
        try:
            while data := link.client.recv(65536):
                link.upstream.sendall(data)
                tripwire = self._tripwire
                if tripwire is not None and tripwire(seen, data):
                    self._tripwire = None
                    link.swallowing = True  # the server answers; the client never hears it
                    time.sleep(0.3)
                    break
        except OSError:
            pass
        finally:
            link.close()

    def _track(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.update(sockets)


# Decides, from a per-connection scratch dict and a chunk the client sent, whether to cut.
Tripwire = Callable[[dict[str, object], bytes], bool]


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.swallowing = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _pump(source: socket.socket, target: socket.socket, link: _Link) -> None:
    """Server -> client."""
    try:
        while data := source.recv(65536):
            if not link.swallowing:
                target.sendall(data)
    except OSError:
        pass
    finally:
        link.close()


def _bound(listener: socket.socket, port: int) -> bool:
    try:
        listener.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True
