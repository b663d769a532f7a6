"""A private, real ``redis-server`` per test, on a free localhost port in a temporary dir.

No mock and no fakeredis: the scripts, timeouts and restarts are Redis's own. The server
keeps nothing on disk (``--save '' --appendonly no``), so a restart empties it, as a
crash of a cache-only Redis would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from sltrader_shared import shared as shared_module

sys.path.insert(0, str(Path(__file__).parent))  # shared_testkit, also in spawned children

from shared_testkit import PATIENT, Trader

#: How long a server may take to answer PING after it started (a loaded machine).
START_BOUND_S = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process: started, stopped, killed, restarted on its port.

    :param password: the server requires it (``--requirepass``); its ``url`` has none.
    """

    def __init__(self, directory: Path, password: str | None = None) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(
                "redis-server not found: the shared plugin's tests need a real Redis server; "
                "install it with `apt-get install -y redis-server` (Debian/Ubuntu)",
                pytrace=False,
            )
        self.executable = executable
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.process is None
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                *(["--requirepass", self.password] if self.password is not None else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_BOUND_S
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Kills the server (SIGKILL: a crash, not a clean shutdown)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)  # a frozen one too
            self.process.kill()
            self.process.wait()
            self.process = None

    def freeze(self) -> None:
        """Stops the server without closing its sockets (SIGSTOP): connections are
        accepted by the kernel and commands are never answered, as a stuck Redis does."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(
            port=self.port, password=self.password, socket_timeout=5, socket_connect_timeout=5
        )


def _running(server: RedisServer) -> Iterator[RedisServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def mark_every_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests' traders scan milliseconds apart: each scan marks them present, as a
    real trader's scans (a second or more apart) do; test_step_aside tests the limit."""
    monkeypatch.setattr(shared_module, "MARK_EVERY_S", 0.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    yield from _running(RedisServer(tmp_path))


@pytest.fixture
def redis_server_with_password(tmp_path: Path) -> Iterator[RedisServer]:
    """A server that requires a password (``server.password``), as a shared one should."""
    yield from _running(RedisServer(tmp_path, password=f"pw-{uuid.uuid4().hex}"))


@pytest.fixture
def traders(redis_server, namespace) -> Iterator[Callable[..., Trader]]:
    made: list[Trader] = []

    def make(**settings: object) -> Trader:
        trader = Trader(redis_server.url, namespace, **{**PATIENT, **settings})
        made.append(trader)
        return trader

    yield make
    for trader in made:
        trader.close()


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def restart_redis(redis_server: RedisServer) -> Callable[[], None]:
    """Kills the test's server and starts it again on the same port (it comes back empty,
    as a crashed cache-only Redis does)."""
    return redis_server.restart
