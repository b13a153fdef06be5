"""A real Redis for the limit tests: Debian's ``redis-server`` on 127.0.0.1, a free port, a password,
no persistence; started and stopped by the fixture, restartable on the same port (fault tests)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fleetproc import HOST, free_port

PASSWORD = "test-store-password"
START_TIMEOUT_S = 15.0


def _ping(port: int, password: str) -> bool:
    """A RESP PING with AUTH, by hand: the check does not depend on the client under test."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    return False
                data += chunk
            return data.endswith(b"+PONG\r\n")
    except OSError:
        return False


@dataclass
class RedisServer:
    tmp: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    password: str = PASSWORD

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def password_file(self) -> str:
        path = self.tmp / "store-password"
        path.write_text(self.password + "\n")
        return str(path)

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:  # a missing dependency is a failure, not a skip: .ci/run installs it
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.port = self.port or free_port()
        self.proc = subprocess.Popen(
            [exe, "--bind", HOST, "--port", str(self.port), "--requirepass", self.password, "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(self.port, self.password):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering after {START_TIMEOUT_S} s")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def dbsize(self) -> int:
        """How many keys the store holds (RESP by hand, independent of the client under test)."""
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            s.sendall(f"AUTH {self.password}\r\nDBSIZE\r\n".encode())
            data = b""
            while data.count(b"\r\n") < 2:
                data += s.recv(256)
        return int(data.split(b"\r\n")[1].lstrip(b":"))


@pytest.fixture
def redis_server(tmp_path):
    r = RedisServer(tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.kill()
