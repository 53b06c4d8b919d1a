"""The message catalogs: both languages have every key, translated, with the same parameters; every key
the pages use exists; dates and amounts in each locale's format."""
from __future__ import annotations

import re
import string
from datetime import datetime, timezone
from pathlib import Path

import pytest

from domain.models import (
    CancellationDecision,
    CareResolution,
    CaseKind,
    ClaimDecision,
    DefectCategory,
    OrderStatus,
    Outcome,
    PayoutStage,
    Role,
    Stage,
)
from starter import i18n
from starter.actions import ACTIONS
from workflows.case.stages import STAGES, Owner

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "starter" / "templates"


def params(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_catalogs_have_the_same_keys_all_translated_with_the_same_parameters():
    fr, en = i18n.catalog("fr"), i18n.catalog("en")
    assert set(fr) == set(en), f"only in fr: {set(fr) - set(en)}; only in en: {set(en) - set(fr)}"
    untranslated = [f"{loc}: {key}" for loc, cat in (("fr", fr), ("en", en)) for key, text in cat.items()
                    if not text.strip()]
    assert not untranslated, untranslated
    assert [k for k in fr if params(fr[k]) != params(en[k])] == []
    # A key left as its own text is a key nobody translated.
    assert [k for k in fr if fr[k] == k or en[k] == k] == []


def test_the_french_catalog_is_french():
    fr, en = i18n.catalog("fr"), i18n.catalog("en")
    alike = {"case.photos", "wallet.date"}  # the same word in both languages
    same = [k for k in fr if fr[k] == en[k] and not k.startswith("lang.") and k not in alike
            and not re.fullmatch(r"\{\w+\}", fr[k])]  # a body that is its param alone (the reason)
    assert same == [], f"French texts identical to the English ones: {same}"


def template_keys() -> set[str]:
    """Every literal key the templates pass to t()."""
    found = set()
    for path in TEMPLATES.glob("*.html"):
        found |= set(re.findall(r"""\bt\(\s*"([a-z_.\-]+)"\s*[,)]""", path.read_text()))
    return found


def code_keys() -> set[str]:
    source = (ROOT / "starter" / "routes" / "pages.py").read_text()
    return set(re.findall(r"""\.t\(\s*"([a-z_.\-]+)"\s*[,)]""", source))


def workflow_events() -> set[str]:
    """The timeline events the workflows record (the case page shows each with its label)."""
    source = "\n".join(p.read_text() for p in (ROOT / "workflows").rglob("*.py"))
    found = set()
    for pattern in (r'record\(\s*"(\w+)"', r'\bevent="(\w+)"', r'\(\s*"(\w+)",\s*\{',
                    r'transition\(\s*[\w.]+,\s*"(\w+)"'):
        found |= set(re.findall(pattern, source))
    return found


def service_reasons() -> set[str]:
    """The refusal reasons of opening a case (the "Get help" page explains each)."""
    source = (ROOT / "starter" / "service.py").read_text()
    found = set(re.findall(r'reason="(\w+)"', source)) - {"missing", "too_short", "unsupported_type", "too_many"}
    found |= {f"{k.value}_window_closed" for k in CaseKind if k != CaseKind.cancellation}
    return found


DYNAMIC = {  # the keys the templates build from a prefix and a value
    "stage.": [s.value for s in Stage], "outcome.": [o.value for o in Outcome], "owner.": [o.value for o in Owner],
    "kind.": [k.value for k in CaseKind], "category.": [c.value for c in DefectCategory],
    "order.status.": [s.value for s in OrderStatus], "payout.": [s.value for s in PayoutStage],
    "resolution.": [r.value for r in CareResolution], "role.": [r.value for r in Role],
    "decision.": [d.value for d in (*CancellationDecision, *ClaimDecision)],
    "action.": list(ACTIONS), "help.explain.": [k.value for k in CaseKind], "help.open.": [k.value for k in CaseKind],
    "lang.": list(i18n.LOCALES), "entry.": ["credit", "hold", "release", "debit"],
    "event.": sorted(workflow_events()),
    "escalation.": [stage.value for stage, rule in STAGES.items() if rule.escalation], "help.reason.": sorted(service_reasons() | {"other"}),
}


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_key_the_pages_use_is_in_the_catalog(locale):
    wanted = template_keys() | code_keys()
    wanted |= {prefix + value for prefix, values in DYNAMIC.items() for value in values}
    wanted |= {f"action.{name}.submit" for name in ACTIONS if name != "offer-answer"}
    assert len(wanted) > 150  # the scan found the templates' keys
    missing = sorted(k for k in wanted if not i18n.has(k, locale))
    assert missing == [], missing


def test_the_scan_sees_every_timeline_event_and_refusal_reason():
    assert {"case_opened", "case_closed", "return_label_issued", "refund_settled", "stage_resumed"} <= workflow_events()
    assert {"order_not_delivered", "withdrawal_still_open", "already_refunded", "order_shipped"} <= service_reasons()


def test_translate_fills_parameters_and_refuses_unknown_keys():
    assert i18n.translate("help.order", "fr", id="ord_1") == "Commande ord_1"
    assert i18n.translate("help.order", "en", id="ord_1") == "Order ord_1"
    assert i18n.translate("help.order", "de", id="ord_1") == "Commande ord_1"  # unknown locale: French
    with pytest.raises(KeyError):
        i18n.translate("no.such.key", "fr")


def test_amounts_and_dates_in_each_locales_format_in_paris_time():
    assert i18n.money(39989, "EUR", "fr").replace("\u00a0", " ").replace("\u202f", " ") == "399,89 €"
    assert i18n.money(39989, "EUR", "en") == "€399.89"
    assert i18n.money(123456789, "EUR", "fr").replace("\u00a0", " ").replace("\u202f", " ") == "1 234 567,89 €"
    summer = datetime(2026, 7, 14, 22, 30, tzinfo=timezone.utc)  # 00:30 the next day in Paris (UTC+2)
    assert i18n.when(summer, "fr") == "15 juillet 2026, 00:30"
    assert i18n.when(summer, "en").replace("\u202f", " ") == "July 15, 2026, 12:30 AM"
    winter = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)  # UTC+1
    assert i18n.when(winter.isoformat(), "fr") == "5 janvier 2026, 09:00"
    assert i18n.day(winter, "en") == "January 5, 2026"


def message_keys() -> set[str]:
    """Every catalog key the case workflows send by (emails, seller webhooks, closing reasons)."""
    source = "\n".join(p.read_text() for p in (ROOT / "workflows").rglob("*.py"))
    used = set(re.findall(r'"((?:mail|reason)\.[a-z0-9_.]+)"', source))
    # seller_decision(case, event, "<key>") sends <key> and, as its reminder, <key>_reminder.
    used |= {k + "_reminder" for k in re.findall(r'seller_decision\(\s*case,[^,]+,\s*"(mail\.\w+)"', source)}
    return used


def catalog_keys_of(key: str) -> set[str]:
    """A message key is its subject and body; a part or a reason is one text."""
    return {key} if key.startswith(("reason.", "mail.part.")) else {f"{key}.subject", f"{key}.body"}


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_message_key_of_the_workflows_is_in_the_catalog_and_every_message_text_is_used(locale):
    used = message_keys()
    assert {"mail.label_asked", "mail.case_closed", "reason.withdrawal_returned", "mail.cancellation_asked_reminder",
            "mail.claim_asked_reminder", "mail.part.replacement"} <= used  # the scan sees them
    wanted = set().union(*(catalog_keys_of(k) for k in used))
    assert sorted(k for k in wanted if not i18n.has(k, locale)) == []
    messages = {k for k in i18n.catalog(locale) if k.startswith(("mail.", "reason."))}
    assert sorted(messages - wanted) == []  # no text left behind by a message that changed


def test_a_message_renders_its_params_in_the_readers_locale():
    params = {"amount_cents": 25499, "currency": "EUR", "order_id": "ord_1", "due_at": "2026-07-14T22:30:00+00:00"}
    subject, body = i18n.render_message("mail.activation_asked", params, "fr")
    assert subject == "Activez le remboursement de la commande ord_1"
    assert body.replace("\xa0", " ") == ("Le produit retourné de la commande ord_1 a été reçu. Activez le "
                                         "remboursement de 254,99 € avant le 15 juillet 2026, 00:30 (heure de Paris).")
    assert i18n.render_message("mail.activation_asked", params, "en")[1] == (
        "The returned item of order ord_1 was received. Activate the refund of €254.99 before July 15, 2026, "
        "12:30\u202fAM (Paris time).")
    # A nested text (the closing reason), kind / outcome / order status by their own keys.
    closing = {"case_id": "case_1", "outcome": "refused", "reason": {"text": "reason.order_already",
                                                                     "params": {"status": "shipped"}}}
    subject, body = i18n.render_message("mail.case_closed", closing, "fr")
    assert subject == "Votre demande case_1 est close (refusée)"
    assert body.startswith("La commande est déjà expédiée : elle ne peut plus être annulée.")
    assert i18n.render_text("reason.refunded_at_legal_deadline", {"kind": "withdrawal"}, "en").startswith("Withdrawal:")
    with pytest.raises(KeyError):  # a param the text needs and the workflow did not give
        i18n.render_text("reason.order_already", {}, "fr")
