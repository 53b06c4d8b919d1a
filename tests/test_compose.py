"""docker-compose.yml, Dockerfile and deploy/ checked with a real Compose implementation.

The parser is Docker Compose v2 (the Compose Spec's reference implementation, compose-go), whose
`config` command validates the file against the spec and prints it resolved (anchors merged,
variables interpolated, defaults filled) without a Docker engine. `make test` installs it into
.venv/bin (Makefile target `tools`); COMPOSE_BIN overrides the path. A missing parser is a failure,
never a skip.
"""
from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

EXPECTED_SERVICES = {
    "postgresql", "temporal-schema", "temporal", "temporal-admin-tools", "temporal-ui", "mailpit",
    "gateway-sandbox", "migrate", "api", "worker",
}
PROJECT_SERVICES = {"gateway-sandbox", "migrate", "api", "worker"}
TEMPORAL_DATABASES = {"temporal", "temporal_visibility"}


def compose_bin() -> Path:
    override = os.environ.get("COMPOSE_BIN")
    path = Path(override) if override else Path(sys.prefix) / "bin" / "docker-compose"
    assert path.is_file() and os.access(path, os.X_OK), (
        f"Docker Compose v2 not found at {path}: run `make tools` (make test does it), "
        "or point COMPOSE_BIN at a docker-compose v2 binary")
    return path


def run_config(compose_file: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`docker-compose -f FILE config` in a clean environment (no stray variable reaches the file)."""
    home = ROOT / ".pytest_cache" / "compose-home"
    home.mkdir(parents=True, exist_ok=True)
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(home),
             **(env or {})}
    return subprocess.run([str(compose_bin()), "-f", str(compose_file), "--project-directory", str(ROOT), "config"],
                          cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def resolved() -> dict:
    version = subprocess.run([str(compose_bin()), "version", "--short"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.strip().lstrip("v").startswith("2."), version
    result = run_config(COMPOSE_FILE, {"CODEC_KEYS": "required-from-the-environment"})
    assert result.returncode == 0, f"docker-compose config rejected the file:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def service(resolved: dict, name: str) -> dict:
    return resolved["services"][name]


def env_of(resolved: dict, name: str) -> dict[str, str]:
    return {k: ("" if v is None else str(v)) for k, v in (service(resolved, name).get("environment") or {}).items()}


def config_env_names() -> set[str]:
    """Every name config.py reads through _env(...) or os.environ."""
    tree = ast.parse((ROOT / "config.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if called in {"_env", "getenv", "get"} and isinstance(node.args[0].value, str) \
                    and re.fullmatch(r"[A-Z][A-Z0-9_]*", node.args[0].value):
                names.add(node.args[0].value)
    return names


# --- the parser itself ---------------------------------------------------------------------------

def test_parser_rejects_an_invalid_file(tmp_path):
    """The parser really validates: an unknown key and a depends_on on a missing service fail."""
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  a:\n    image: busybox\n    replicas_typo: 3\n")
    assert run_config(bad).returncode != 0
    bad.write_text("services:\n  a:\n    image: busybox\n    depends_on:\n      b:\n        condition: service_healthy\n")
    assert run_config(bad).returncode != 0


def test_compose_file_is_valid_and_has_every_service(resolved):
    assert EXPECTED_SERVICES <= set(resolved["services"]), EXPECTED_SERVICES - set(resolved["services"])


# --- the services --------------------------------------------------------------------------------

def test_several_worker_replicas(resolved):
    assert int(service(resolved, "worker")["deploy"]["replicas"]) >= 2


def _module_file(module: str) -> Path | None:
    base = ROOT / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_project_services_run_code_that_exists(resolved):
    for name in PROJECT_SERVICES:
        svc = service(resolved, name)
        assert "build" in svc and Path(svc["build"]["context"]).resolve() == ROOT, name
        command = svc["command"]
        command = shlex.split(command) if isinstance(command, str) else list(command)
        assert command[0] in {"python", "python3"}, (name, command)
        if command[1] == "-m":
            module, args = command[2], command[3:]
            if module == "uvicorn":  # the ASGI app "package.module:attr"
                target = args[0]
                mod, _, attr = target.partition(":")
                path = _module_file(mod)
                assert path is not None, (name, target)
                assert re.search(rf"^{re.escape(attr)}\s*=", path.read_text(), re.M), (name, target)
            else:
                path = _module_file(module)
                assert path is not None, (name, module)
                source = path.read_text()
                assert path.name == "__main__.py" or '__name__ == "__main__"' in source, \
                    f"{module} has no __main__ block for `python -m {module}`"
                for arg in args:
                    if not arg.startswith("-") and not re.fullmatch(r"[\d.:]+", arg):
                        assert arg in source, f"{module} does not handle the argument {arg!r}"
        else:
            script = ROOT / command[1]
            assert script.is_file(), (name, command)
            assert '__name__ == "__main__"' in script.read_text(), script


def test_servers_in_containers_listen_on_every_interface(resolved):
    for name in ("api", "gateway-sandbox"):
        command = service(resolved, name)["command"]
        assert command[command.index("--host") + 1] == "0.0.0.0", name


def test_healthchecks(resolved):
    for name in ("postgresql", "temporal", "api", "gateway-sandbox"):
        check = service(resolved, name).get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), name
    assert "/readyz" in " ".join(service(resolved, "api")["healthcheck"]["test"])
    assert "pg_isready" in " ".join(service(resolved, "postgresql")["healthcheck"]["test"])


def _conditions(resolved: dict, name: str) -> dict[str, str]:
    deps = service(resolved, name).get("depends_on") or {}
    return {dep: spec.get("condition") for dep, spec in deps.items()}


def test_start_order(resolved):
    for name in ("api", "worker"):
        deps = _conditions(resolved, name)
        assert deps.get("migrate") == "service_completed_successfully", (name, deps)
        assert deps.get("temporal") == "service_healthy", (name, deps)
        assert deps.get("temporal-admin-tools") == "service_completed_successfully", (name, deps)
    assert _conditions(resolved, "migrate").get("postgresql") == "service_healthy"
    assert _conditions(resolved, "temporal-schema").get("postgresql") == "service_healthy"
    assert _conditions(resolved, "temporal").get("temporal-schema") == "service_completed_successfully"
    assert _conditions(resolved, "temporal").get("postgresql") == "service_healthy"
    assert _conditions(resolved, "temporal-admin-tools").get("temporal") == "service_healthy"
    assert _conditions(resolved, "temporal-ui").get("temporal") == "service_healthy"
    for one_shot in ("migrate", "temporal-schema", "temporal-admin-tools"):
        assert service(resolved, one_shot).get("restart", "no") == "no", one_shot


# --- the environment -----------------------------------------------------------------------------

def image_env() -> dict[str, str]:
    """The variables the Dockerfile's ENV instructions set in the image (NAME=value form)."""
    out = {}
    for keyword, rest in _dockerfile_instructions():
        if keyword == "ENV":
            for part in shlex.split(rest):
                name, _, value = part.partition("=")
                out[name] = value
    return out


def test_every_setting_the_project_reads_is_set_for_api_and_worker(resolved):
    names = config_env_names()
    assert {"TEMPORAL_ADDRESS", "DATABASE_URL", "SMTP_HOST", "GATEWAY_URL", "WORKER_BUILD_ID"} <= names  # the parse works
    for name in ("api", "worker", "migrate"):
        missing = names - set(env_of(resolved, name)) - set(image_env())
        assert not missing, f"{name} lacks {sorted(missing)}"
    assert env_of(resolved, "worker")["METRICS_BIND"].endswith(":9464")


def test_addresses_point_at_services_of_the_stack(resolved):
    services = set(resolved["services"])
    for name in ("api", "worker", "migrate"):
        env = env_of(resolved, name)
        assert env["TEMPORAL_ADDRESS"].rsplit(":", 1)[0] == "temporal"
        assert env["SMTP_HOST"] == "mailpit" and env["SMTP_PORT"] == "1025"
        assert urlsplit(env["GATEWAY_URL"]).hostname == "gateway-sandbox"
        assert urlsplit(env["GATEWAY_URL"]).port == 8100
        db = urlsplit(env["DATABASE_URL"])
        assert db.scheme in {"postgresql", "postgres"} and db.hostname == "postgresql" and db.hostname in services
        assert db.path.lstrip("/") not in TEMPORAL_DATABASES, "the project needs its own database"
        assert env["TEMPORAL_NAMESPACE"] == env_of(resolved, "temporal-admin-tools")["TEMPORAL_NAMESPACE"]
    assert env_of(resolved, "api") == {**env_of(resolved, "worker"), "METRICS_BIND": env_of(resolved, "api")["METRICS_BIND"]}
    assert env_of(resolved, "api")["DATABASE_URL"] == env_of(resolved, "migrate")["DATABASE_URL"]


def test_workers_take_their_build_id_from_the_image(resolved):
    """WORKER_BUILD_ID is baked into the image from the build argument BUILD_ID and never overridden
    by the compose environment; every project service builds with that argument."""
    from config import DEFAULT_DEPLOYMENT

    assert "WORKER_BUILD_ID" not in env_of(resolved, "worker")
    assert env_of(resolved, "worker")["WORKER_DEPLOYMENT"] == DEFAULT_DEPLOYMENT
    assert ("ARG", 'BUILD_ID=""') in _dockerfile_instructions()
    assert image_env()["WORKER_BUILD_ID"] == "${BUILD_ID}"
    result = run_config(COMPOSE_FILE, {"BUILD_ID": "3f9c2e1", "CODEC_KEYS": "required-from-the-environment"})
    assert result.returncode == 0, result.stderr
    for name in PROJECT_SERVICES:
        assert yaml.safe_load(result.stdout)["services"][name]["build"]["args"] == {"BUILD_ID": "3f9c2e1"}, name


def test_gateway_sandbox_and_app_share_keys_and_webhook(resolved):
    sandbox, app = env_of(resolved, "gateway-sandbox"), env_of(resolved, "api")
    assert sandbox["GATEWAY_API_KEY"] == app["GATEWAY_API_KEY"]
    assert sandbox["GATEWAY_WEBHOOK_SECRET"] == app["GATEWAY_WEBHOOK_SECRET"]
    hook = urlsplit(sandbox["GATEWAY_WEBHOOK_URL"])
    assert hook.hostname == "api" and hook.port == 8000
    from config import Settings
    from starter.api import create_app

    assert hook.path in create_app(Settings(temporal_address="unused")).openapi()["paths"], "webhook route missing in the API"


def test_project_database_is_created_by_the_init_script(resolved):
    pg = service(resolved, "postgresql")
    mounts = [v for v in pg["volumes"] if v["type"] == "bind"]
    init = [v for v in mounts if v["target"].startswith("/docker-entrypoint-initdb.d/")]
    assert init, "no init script mounted into /docker-entrypoint-initdb.d"
    script = Path(init[0]["source"]).read_text()
    pg_env = env_of(resolved, "postgresql")
    db = urlsplit(env_of(resolved, "api")["DATABASE_URL"])
    assert "CREATE DATABASE" in script and "CREATE ROLE" in script
    assert pg_env["APP_DB_NAME"] == db.path.lstrip("/") and pg_env["APP_DB_USER"] == db.username
    assert pg_env["APP_DB_PASSWORD"] == db.password
    assert pg_env["TEMPORAL_DB_PASSWORD"] == env_of(resolved, "temporal")["POSTGRES_PWD"]


def test_temporal_runs_on_postgresql(resolved):
    for name in ("temporal", "temporal-schema"):
        env = env_of(resolved, name)
        assert env["POSTGRES_SEEDS"] == "postgresql"
        assert {env["DBNAME"], env["VISIBILITY_DBNAME"]} == TEMPORAL_DATABASES
    assert env_of(resolved, "temporal")["DB"] == "postgres12"
    ui = service(resolved, "temporal-ui")
    assert env_of(resolved, "temporal-ui")["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert any(str(p["target"]) == "8080" and str(p["published"]) == "8233" for p in ui["ports"])


def test_search_attributes_match_the_workflows(resolved):
    from workflows.search_attributes import cli_definitions

    declared = env_of(resolved, "temporal-admin-tools")["SEARCH_ATTRIBUTES"].split()
    assert declared == cli_definitions()


def test_bind_mounts_exist_and_scripts_parse(resolved):
    for name, svc in resolved["services"].items():
        for volume in svc.get("volumes") or []:
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), (name, volume["source"])
        if svc.get("entrypoint") == ["/bin/sh"]:
            script = svc["command"][0]
            mount = next(v for v in svc["volumes"] if script.startswith(v["target"] + "/"))
            host_script = Path(mount["source"]) / script[len(mount["target"]) + 1:]
            assert host_script.is_file(), (name, host_script)
            assert subprocess.run(["sh", "-n", str(host_script)]).returncode == 0, host_script
    dynamic = env_of(resolved, "temporal")["DYNAMIC_CONFIG_FILE_PATH"]
    mount = next(v for v in service(resolved, "temporal")["volumes"]
                 if v["target"] == "/etc/temporal/config/dynamicconfig")
    assert yaml.safe_load((Path(mount["source"]) / Path(dynamic).name).read_text())


# --- the image -----------------------------------------------------------------------------------

def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_copies_what_exists_and_what_pip_install_needs():
    assert DOCKERFILE.is_file()
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copied: set[str] = set()
    for keyword, rest in instructions:
        if keyword == "COPY":
            args = [a for a in rest.split() if not a.startswith("--")]
            for source in args[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} does not exist"
                copied.add(source.rstrip("/"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    packages = {p.split(".")[0] for p in setuptools["packages"]}  # a subpackage comes with its parent's folder
    needed = {"pyproject.toml", "migrations", *packages, *(f"{m}.py" for m in setuptools["py-modules"])}
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    assert any(k == "RUN" and "pip install ." in r for k, r in instructions)
    users = [r for k, r in instructions if k == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must run as a non-root user"
    cmd = [r for k, r in instructions if k == "CMD"][-1]
    assert "starter.api:app" in cmd


def test_dockerignore_keeps_local_state_out():
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".data", ".git"} <= ignored
    assert {"**/__pycache__", ".pytest_cache"} <= ignored


def test_codec_keys_come_from_the_environment_never_from_the_file():
    result = run_config(COMPOSE_FILE)
    assert result.returncode != 0 and "CODEC_KEYS" in result.stderr
