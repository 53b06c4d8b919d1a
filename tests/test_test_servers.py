"""The suite's own server start-up (tests/helpers/servers.py): a port lost to another listener between
choosing it and binding it is retried on a new one, and a start that fails says which server, which
port and what its log ended with. The lost race is forced by handing the helper a port that is taken."""
from __future__ import annotations

import socket

import httpx
import pytest

from tests.helpers import servers


@pytest.fixture
def taken_port():
    """A port somebody else listens on, as the dev server's own HTTP/metrics ports were in the report."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def ports_handed_out(monkeypatch, first: list[int]) -> list[int]:
    """free_port() gives `first` out, then real free ports; returns the list of what it gave."""
    real, given = servers.free_port, []

    def fake() -> int:
        port = first.pop(0) if first else real()
        given.append(port)
        return port

    monkeypatch.setattr(servers, "free_port", fake)
    return given


def test_the_metrics_exporter_on_a_taken_port_is_started_again_on_another(monkeypatch, taken_port):
    # The failure of the report, reproduced: the SDK refuses a taken port with "Address already in use".
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    with pytest.raises(ValueError, match="(?i)address already in use"):
        Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{taken_port}")))

    given = ports_handed_out(monkeypatch, [taken_port])
    runtime, port = servers.start_metrics_runtime()
    assert given[0] == taken_port and port == given[1] != taken_port
    assert runtime is not None


def test_a_start_that_always_loses_names_the_server_and_port(monkeypatch, taken_port):
    ports_handed_out(monkeypatch, [taken_port] * servers.ATTEMPTS)
    with pytest.raises(servers.ServerStartError) as err:
        servers.start_metrics_runtime()
    assert err.value.what == "worker Prometheus exporter" and err.value.port == taken_port
    assert f"127.0.0.1:{taken_port}" in str(err.value) and "Address already in use" in str(err.value)


def test_a_failure_other_than_a_lost_port_is_not_retried(monkeypatch):
    calls = []

    def start(port):
        calls.append(port)
        raise RuntimeError("bad configuration")

    with pytest.raises(servers.ServerStartError, match="thing did not start .*bad configuration"):
        servers.retry_on_port_clash("thing", start, log=lambda: "line 1\nline 2")
    assert len(calls) == 1


async def test_the_dev_server_on_a_taken_port_starts_on_another_and_reports_its_log(monkeypatch, taken_port, tmp_path):
    given = ports_handed_out(monkeypatch, [taken_port])
    server = await servers.start_dev_server(tmp_path / "server.log")
    try:
        assert given[0] == taken_port and server.port == given[1]
        from temporalio.client import Client

        await Client.connect(server.address)
    finally:
        server.stop()

    monkeypatch.setattr(servers, "ATTEMPTS", 2)  # each lost start of the dev server costs seconds
    ports_handed_out(monkeypatch, [taken_port] * servers.ATTEMPTS)
    with pytest.raises(servers.ServerStartError) as err:
        await servers.start_dev_server(tmp_path / "again.log")
    message = str(err.value)
    assert "Temporal dev server" in message and str(taken_port) in message
    assert "last lines of its log" in message and "address already in use" in message.lower()


async def test_an_app_is_served_on_the_socket_bound_before_it_starts():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ping")
    def ping():
        return {"pong": True}

    sock = servers.bound_socket()
    port = sock.getsockname()[1]
    with pytest.raises(OSError):  # held: nobody else can bind it meanwhile
        socket.socket().bind(("127.0.0.1", port))
    served = await servers.ServedApp(app, sock=sock).start()
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/ping")).json() == {"pong": True}
    finally:
        await served.stop()


def test_postgres_on_a_taken_port_starts_on_another(monkeypatch, taken_port, tmp_path):
    given = ports_handed_out(monkeypatch, [taken_port])
    server = servers.start_postgres(tmp_path / "pg")
    try:
        assert given[0] == taken_port and server.port == given[1] and server.is_running()
    finally:
        server.stop("immediate")
