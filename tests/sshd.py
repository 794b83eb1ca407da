"""A throwaway OpenSSH server on 127.0.0.1 for deployment tests: its own host key, one
authorized client key (ed25519, generated), a random port, and a private TMPDIR, so Ansible
runs against a real sshd exactly as against a remote machine. Runs as the current user
(root here, ``AllowUsers root``)."""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
from contextlib import suppress
from pathlib import Path

from tests.services import free_port, wait_until

SSHD = Path("/usr/sbin/sshd")


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "conveyor-test", "-f", str(path)],
        check=True,
    )


class Sshd:
    """``start()`` then use ``port``, ``user`` and ``client_key`` (the private key's text)."""

    def __init__(self, directory: Path, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.dir = directory
        # Several loopback addresses give several distinct targets (host:port) on one sshd.
        self.addresses = addresses
        self.port = free_port()
        self.user = getpass.getuser()
        self.process: subprocess.Popen[bytes] | None = None
        self.tmp = directory / "tmp"
        self.log_path = directory / "sshd.log"

    @property
    def client_key(self) -> str:
        return (self.dir / "client_key").read_text()

    def start(self) -> Sshd:
        if not SSHD.exists():
            raise RuntimeError("openssh-server is not installed (scripts/setup installs it)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir
        _keygen(self.dir / "host_key")
        _keygen(self.dir / "client_key")
        authorized = self.dir / "authorized_keys"
        authorized.write_text((self.dir / "client_key.pub").read_text())
        authorized.chmod(0o600)
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    *(f"ListenAddress {address}" for address in self.addresses),
                    f"HostKey {self.dir / 'host_key'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AllowUsers {self.user}",
                    "UsePAM no",
                    "StrictModes no",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 100:30:200",
                    f"SetEnv TMPDIR={self.tmp}",
                    "",
                ]
            )
        )
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_until(self._listening, timeout=15, message=f"sshd on port {self.port}")
        return self

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sshd exited: {self.log_path.read_text(errors='replace')}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex((self.addresses[0], self.port)) == 0

    def stop(self) -> None:
        if self.process is None:
            return
        # The session holds sshd and every connection it forked: end them all.
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None
