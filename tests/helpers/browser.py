"""Headless Chromium for browser tests: Debian's package driven by Playwright (no browser download)."""
from __future__ import annotations

from contextlib import asynccontextmanager

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
# Chromium's background connections are refused by this machine's closed network: turn them off.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@asynccontextmanager
async def chromium():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
