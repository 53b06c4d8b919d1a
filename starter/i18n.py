"""French and English: message catalogs (Babel .po files in starter/locales/, read by Babel at import,
so nothing needs compiling), dates in Europe/Paris in the locale's format, amounts in the locale's
format (`399,89 €` in French).

Messages are looked up by key (`translate("stage.in_transit", "fr")`), with `{name}` parameters; a
key missing from a catalog is an error, never a silent fallback (tests/test_i18n.py walks both
catalogs).

The case's emails and seller webhooks live here too: the workflow names a text by key with JSON-able
params (`mail.label_asked` has `.subject` and `.body`; a closing reason is one `reason.*` key), and the
notify activity renders it in the recipient's locale (`render_message`, `render_text`).
"""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.pofile import read_po
from babel.numbers import format_currency

from domain.calendar import PARIS

LOCALES = ("fr", "en")
DEFAULT_LOCALE = "fr"  # the marketplace is French
CATALOG_DIR = Path(__file__).resolve().parent / "locales"


@lru_cache(maxsize=None)
def catalog(locale: str) -> dict[str, str]:
    """key -> text of one locale's catalog."""
    with open(CATALOG_DIR / f"{locale}.po", "rb") as f:
        po = read_po(f, locale=locale)
    return {m.id: m.string for m in po if m.id}


def locale_or_default(value: str | None) -> str:
    return value if value in LOCALES else DEFAULT_LOCALE


def translate(key: str, locale: str, **params) -> str:
    text = catalog(locale_or_default(locale))[key]
    return text.format(**params) if params else text


def has(key: str, locale: str) -> bool:
    return key in catalog(locale_or_default(locale))


def money(cents: int, currency: str, locale: str) -> str:
    return format_currency(cents / 100, currency, locale=locale_or_default(locale))


def when(moment: datetime | str | None, locale: str) -> str:
    """A moment in Europe/Paris, in the locale's long date and short time ("1 décembre 2026, 14:30")."""
    if moment is None:
        return ""
    loc = locale_or_default(locale)
    return format_datetime(_in_paris(moment), _moment_pattern(loc), locale=loc)


def _in_paris(moment: datetime | str) -> datetime:
    """An aware moment, or its ISO form (what the workflows pass), in Europe/Paris."""
    return (datetime.fromisoformat(moment) if isinstance(moment, str) else moment).astimezone(PARIS)


@lru_cache(maxsize=None)
def _moment_pattern(locale: str) -> str:
    """The locale's own way of joining its long date and its short time."""
    loc = Locale.parse(locale)
    return (loc.datetime_formats["long"].replace("{1}", loc.date_formats["long"].pattern)
            .replace("{0}", loc.time_formats["short"].pattern))


def day(moment: datetime | str | None, locale: str) -> str:
    """The date alone, in Europe/Paris ("1 décembre 2026")."""
    if moment is None:
        return ""
    return format_date(_in_paris(moment), "long", locale=locale_or_default(locale))


# Params rendered by their name (the workflow passes only JSON values, the locale decides the words).
BY_NAME = {"kind": "kind.{}", "outcome": "outcome.{}", "stage": "stage.{}", "category": "category.{}",
           "status": "order.status.{}"}


def render_text(key: str, params: dict | None, locale: str) -> str:
    """One catalog text with its params: `*_at` an ISO moment (when()), `*_cents` an amount in
    params["currency"] (EUR by default), kind/outcome/stage/category/status by their own keys, a
    {"text", "params"} dict a nested text (workflows/case/base.py `text`), anything else as is."""
    loc, params = locale_or_default(locale), params or {}
    # Always formatted: a placeholder the workflow gave no value for is an error, never shown as "{x}".
    return catalog(loc)[key].format(**{name: _param(name, value, params, loc) for name, value in params.items()}).strip()


def _param(name: str, value, params: dict, locale: str):
    if isinstance(value, dict) and "text" in value:
        return render_text(value["text"], value.get("params"), locale)
    if value is None:
        return ""
    if name.endswith("_at"):
        return when(value, locale)
    if name.endswith("_cents"):
        return money(value, params.get("currency") or "EUR", locale)
    if name in BY_NAME:
        return translate(BY_NAME[name].format(value), locale)
    return value


def render_message(text: str, params: dict | None, locale: str) -> tuple[str, str]:
    """An email / webhook message: (subject, body) of `text` in the locale."""
    return render_text(f"{text}.subject", params, locale), render_text(f"{text}.body", params, locale)
