"""A Redis Sentinel set of real processes for tests: a master, a replica and three Sentinels,
each on a random port with its own writable config file (Sentinel rewrites it).

The set needs a few seconds before a failover can work: the Sentinels learn about the
replica through the master's INFO (every 10 s at most), so ``start`` waits until they list
it. With ``down-after-milliseconds 1000`` a killed master is replaced in ~2-3 s.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.services import RedisServer, free_port, wait_until

MASTER_NAME = "conveyor"


class SentinelSet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "master").mkdir()
        (tmp / "replica").mkdir()
        self.master = RedisServer(tmp / "master")
        self.replica = RedisServer(
            tmp / "replica", "--replicaof", "127.0.0.1", str(self.master.port)
        )
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def addresses(self) -> str:
        """The ``CONVEYOR_REDIS_SENTINELS`` value."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.start()
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        for port in self.sentinel_ports:
            config = self.tmp / f"sentinel-{port}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.tmp}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            )
            self._sentinels.append(
                subprocess.Popen(
                    [binary, str(config), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        wait_until(self._ready, timeout=30, interval=0.2, message="sentinels know the replica")
        return self

    def _ready(self) -> bool:
        for port in self.sentinel_ports:
            client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
            try:
                if not client.sentinel_slaves(MASTER_NAME):
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def current_master_port(self) -> int | None:
        client = redis.Redis(port=self.sentinel_ports[0], socket_timeout=0.5)
        try:
            address = client.sentinel_get_master_addr_by_name(MASTER_NAME)
        except redis.RedisError:
            return None
        finally:
            client.close()
        return int(address[1]) if isinstance(address, tuple | list) else None

    def kill_master(self) -> None:
        """SIGKILL the current master (no persistence: what it held alone is gone)."""
        self.master.stop()

    def stop(self) -> None:
        for process in self._sentinels:
            process.kill()
            process.wait(10)
        self._sentinels.clear()
        self.replica.stop()
        self.master.stop()
