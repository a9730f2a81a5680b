"""A real PostgreSQL server for the store tests: the OS package's binaries, a temporary cluster, loopback.

``pg_server`` (session) initdb's a cluster in a temporary folder and starts it on a free port on
127.0.0.1; ``pg_url`` (function) gives each test a database of its own on it. PostgreSQL refuses to
run as root, so as root the cluster belongs to the ``postgres`` user (made by the OS package) and its
commands run through ``runuser``. Without the binaries the PostgreSQL variants skip, saying why
(``make test`` installs them when it can).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

__all__ = ["PgServer", "find_pg_bin", "pg_server", "pg_url", "store_url"]


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb, or initdb on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.run_as = None
        if os.geteuid() == 0:
            try:
                self.run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root and there is no 'postgres' user to run the server"
                ) from None
        self.dir = Path(tempfile.mkdtemp(prefix="geonas-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        if self.run_as is not None:
            os.chown(self.dir, self.run_as.pw_uid, self.run_as.pw_gid)

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.run_as is not None else cmd

    def start(self) -> None:
        run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
        subprocess.run(
            self._cmd("initdb", "-D", str(self.data), "-A", "trust", "-U", "geonas", "-E", "UTF8"), **run
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            self._cmd(
                "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start"
            ),
            **run,
        )

    def stop(self) -> None:
        subprocess.run(
            self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://geonas@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"postgresql://geonas@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server on a loopback port for the whole session, or a skip saying why there is none."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql, or run `make test` as root)")
    server = PgServer(bin_dir)
    try:
        server.start()
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        server.stop()
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.skip(f"PostgreSQL at {bin_dir} would not start: {detail.strip()[-300:]}")
    yield server
    server.stop()


@pytest.fixture()
def pg_url(pg_server) -> str:
    """A fresh, empty database on the session server."""
    return pg_server.create_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """Parametrizes a test over both backends: a SQLite file, and a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")
