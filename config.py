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


def settings() -> Settings:
    return Settings()
