"""Runtime settings from the environment, one place for every name and default."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    temporal_address: str = field(default_factory=lambda: _env("TEMPORAL_ADDRESS", "localhost:7233"))
    temporal_namespace: str = field(default_factory=lambda: _env("TEMPORAL_NAMESPACE", "default"))
    task_queue: str = field(default_factory=lambda: _env("TASK_QUEUE", "aftersales"))
    database_url: str = field(default_factory=lambda: _env("DATABASE_URL", ""))
    smtp_host: str = field(default_factory=lambda: _env("SMTP_HOST", "127.0.0.1"))
    smtp_port: int = field(default_factory=lambda: int(_env("SMTP_PORT", "1025")))
    mail_from: str = field(default_factory=lambda: _env("MAIL_FROM", "after-sales@marketplace.example"))
    care_email: str = field(default_factory=lambda: _env("CARE_EMAIL", "care@marketplace.example"))
    # Payment gateway: Stripe's API (the sandbox locally). A real Stripe key + api.stripe.com works as is.
    gateway_url: str = field(default_factory=lambda: _env("GATEWAY_URL", "http://127.0.0.1:8100"))
    gateway_api_key: str = field(default_factory=lambda: _env("GATEWAY_API_KEY", "sk_test_sandbox"))
    gateway_webhook_secret: str = field(default_factory=lambda: _env("GATEWAY_WEBHOOK_SECRET", "whsec_sandbox"))
    carrier_webhook_secret: str = field(default_factory=lambda: _env("CARRIER_WEBHOOK_SECRET", "carrier_sandbox_secret"))
    attachments_dir: str = field(default_factory=lambda: _env("ATTACHMENTS_DIR", ".data/attachments"))
    # Worker metrics (Prometheus text format), empty to disable.
    metrics_bind: str = field(default_factory=lambda: _env("METRICS_BIND", ""))
    # Workflows kept in the worker's memory between their tasks (more: fewer replays; RSS ≈ 100 MiB +
    # ~0.17 MiB per cached case).
    worker_max_cached_workflows: int = field(default_factory=lambda: int(_env("WORKER_MAX_CACHED_WORKFLOWS", "500")))
    # The workflow sandbox: "fast" (production: the project's pure and workflow modules imported once,
    # passed through) or "strict" (every module of a workflow re-imported per run, calls restricted:
    # what the tests and the replay test run, worker.py).
    workflow_sandbox: str = field(default_factory=lambda: _env("WORKFLOW_SANDBOX", "fast"))
    # Worker Deployment Versioning: the worker runs as version (deployment, build id). An empty
    # deployment means an unversioned worker (the test workers, the bench); `make run` and the compose
    # stack set it. The build id defaults to the git commit (see build_id()); the image bakes it in.
    worker_deployment: str = field(default_factory=lambda: _env("WORKER_DEPLOYMENT", ""))
    worker_build_id: str = field(default_factory=lambda: _env("WORKER_BUILD_ID", ""))
    # Encryption keys of Temporal payloads and bank details (codec.py): "kid:base64key,...", the first
    # encrypts. Never in the repository: `make run` generates dev keys into .data/codec-keys.
    codec_keys: str = field(default_factory=lambda: _env("CODEC_KEYS", ""))
    # Origin of the Temporal UI allowed to call the codec server (/codec) from the browser.
    codec_cors_origins: str = field(default_factory=lambda: _env("CODEC_CORS_ORIGINS", "http://127.0.0.1:8233,http://localhost:8233"))


def settings() -> Settings:
    return Settings()


DEFAULT_DEPLOYMENT = "aftersales"  # the deployment `make run`, compose and `python -m starter.deploy` use


def build_id(s: Settings) -> str:
    """The worker's build id: WORKER_BUILD_ID, else the git commit of the checkout (`make run`).
    The image has no .git: its WORKER_BUILD_ID comes from the build argument BUILD_ID (Dockerfile)."""
    if s.worker_build_id:
        return s.worker_build_id
    import subprocess
    from pathlib import Path

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except OSError:
        out = None
    if out is None or out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError("no build id for the worker: set WORKER_BUILD_ID (an image gets it from "
                           "`docker compose build` with BUILD_ID=$(git rev-parse --short HEAD))")
    return out.stdout.strip()


class JsonLogFormatter:
    """One JSON object per line, carrying the case id: from the Temporal activity/workflow context the
    SDK attaches (`temporal_activity` / `temporal_workflow` extras) or an explicit `case_id` extra."""

    def format(self, record) -> str:
        import json
        import re
        from datetime import datetime, timezone

        context = getattr(record, "temporal_activity", None) or getattr(record, "temporal_workflow", None) or {}
        workflow_id = context.get("workflow_id")
        case_id = getattr(record, "case_id", None) or (
            re.sub(r"-(return|refund-\d+)$", "", workflow_id) if workflow_id else None)
        line = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(), "level": record.levelname,
                "logger": record.name, "msg": record.getMessage()}
        if case_id:
            line["case_id"] = case_id
        if context.get("activity_type") or context.get("workflow_type"):
            line["temporal"] = context.get("activity_type") or context.get("workflow_type")
        if record.exc_info:
            import logging

            line["exc"] = logging.Formatter().formatException(record.exc_info)
        return json.dumps(line, default=str)


def setup_logging() -> None:
    """Structured logs (LOG_FORMAT=json, the default) or plain text (LOG_FORMAT=text)."""
    import logging

    handler = logging.StreamHandler()
    if os.environ.get("LOG_FORMAT", "json") == "json":
        handler.setFormatter(JsonLogFormatter())  # type: ignore[arg-type]
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), handlers=[handler], force=True)
