"""Every email of a full withdrawal in the reader's language (customers.locale / sellers.locale), checked
against the SMTP sink: French by default (amounts as `254,99 €`, dates in French), English when the
parties chose it. The texts come from the catalog (starter/locales), by key, with nothing left unfilled."""
from __future__ import annotations

import re

from domain.models import CaseKind, Outcome, SimpleAction, Stage
from tests.helpers.cases import (
    closed_reason,
    deliver,
    issue_label,
    mail_with,
    mails_to,
    open_case,
    seller,
    settle_refund,
    ship,
    wait_stage,
)
from tests.helpers.data import make_party, order_total
from workflows.case import CaseWorkflow

FR_MONTHS = "janvier|février|mars|avril|mai|juin|juillet|août|septembre|octobre|novembre|décembre"
EN_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
# Words only an English text has (a French email showing one has an untranslated part).
ENGLISH_WORDS = re.compile(r"\b(the|your|you|order|refund|return|label|before|reminder|case|with)\b", re.I)
FRENCH_WORDS = re.compile(r"\b(votre|vous|commande|remboursement|étiquette|avant|rappel|demande|le|la)\b", re.I)


def plain(text: str) -> str:
    return text.replace("\xa0", " ").replace("\u202f", " ").strip()  # Babel's (narrow) no-break spaces


async def walk_withdrawal(ts_env, pool, task_queue, party, gateway_sandbox, mail_sink) -> tuple[dict[str, list], object]:
    """A withdrawal from opening to the settled refund; the customer's and the seller's emails."""
    handle, order_id = await open_case(ts_env, pool, task_queue, party, CaseKind.withdrawal)
    await wait_stage(handle, Stage.awaiting_return_label)
    await issue_label(handle, party)
    await ship(handle, party)
    await deliver(ts_env, handle)
    await wait_stage(handle, Stage.awaiting_refund_activation)
    await handle.execute_update(CaseWorkflow.activate_refund, SimpleAction(actor=seller(party)))
    await wait_stage(handle, Stage.awaiting_bank_settlement)
    await settle_refund(ts_env, gateway_sandbox.url, handle.id, f"pi_{order_id}")
    final = await handle.result()
    assert final.outcome == Outcome.refunded
    # The seller's closing email, the last one sent (French "Demande … close", English "Case … closed").
    assert await mail_with(mail_sink, party["seller_email"], f"{handle.id} close")
    mails = {who: [{**m, "subject": plain(m["subject"]), "body": plain(m["body"])}
                   for m in mails_to(mail_sink, party[f"{who}_email"])] for who in ("customer", "seller")}
    return mails, final


def assert_filled(mails: dict[str, list]) -> None:
    for m in mails["customer"] + mails["seller"]:
        text = m["subject"] + "\n" + m["body"]
        assert "{" not in text and "mail." not in text and "reason." not in text, text


async def test_every_email_of_a_withdrawal_is_french_by_default(ts_env, pool, case_worker, gateway_sandbox, mail_sink,
                                                                 task_queue):
    party = await make_party(pool)  # locale not chosen: French
    mails, final = await walk_withdrawal(ts_env, pool, task_queue, party, gateway_sandbox, mail_sink)
    assert_filled(mails)
    customer, sellers = mails["customer"], mails["seller"]
    subjects = [m["subject"] for m in customer]
    assert subjects[0] == "Nous avons bien reçu votre demande : Rétractation"
    assert any(s.startswith("Votre étiquette de retour pour la commande") for s in subjects)
    assert "Votre remboursement de 254,99 € est en route" in subjects
    assert subjects[-1] == f"Votre demande {final.case_id} est close (remboursée)"
    assert customer[-1]["body"] == "Rétractation : le produit a été retourné." == closed_reason(final, "fr")
    seller_subjects = [m["subject"] for m in sellers]
    assert any(s.startswith("Étiquette de retour à émettre pour la commande") for s in seller_subjects)
    assert any(s.startswith("Activez le remboursement de la commande") for s in seller_subjects)
    assert seller_subjects[-1].startswith(f"Demande {final.case_id} close")  # the seller is told it closed
    activation = next(m for m in sellers if m["subject"].startswith("Activez"))
    assert "Activez le remboursement de 254,99 € avant le" in activation["body"]
    for m in customer + sellers:
        text = m["subject"] + "\n" + m["body"]
        assert not ENGLISH_WORDS.search(text), text
        assert not re.search(EN_MONTHS, text), text
    # Every deadline is a French date in Paris time ("3 décembre 2026, 18:00 (heure de Paris)").
    dated = [m for m in customer + sellers if "avant le" in m["body"]]
    assert len(dated) >= 2
    for m in dated:
        assert re.search(rf"avant le \d{{1,2}} ({FR_MONTHS}) \d{{4}}, \d{{2}}:\d{{2}} \(heure de Paris\)", m["body"]), m
    assert (final.closed_reason_key, order_total()) == ("reason.withdrawal_returned", 25499)


async def test_every_email_of_a_withdrawal_is_english_for_english_readers(ts_env, pool, case_worker, gateway_sandbox,
                                                                           mail_sink, task_queue, party_en):
    mails, final = await walk_withdrawal(ts_env, pool, task_queue, party_en, gateway_sandbox, mail_sink)
    assert_filled(mails)
    customer, sellers = mails["customer"], mails["seller"]
    subjects = [m["subject"] for m in customer]
    assert subjects[0] == "We received your request: Withdrawal"
    assert "Your refund of €254.99 is on its way" in subjects
    assert subjects[-1] == f"Your case {final.case_id} is closed (refunded)"
    assert customer[-1]["body"] == "Withdrawal: the item was returned."
    assert any(m["subject"].startswith("Activate the refund of order") for m in sellers)
    assert sellers[-1]["subject"].startswith(f"Case {final.case_id} closed")
    for m in customer + sellers:
        text = m["subject"] + "\n" + m["body"]
        assert not FRENCH_WORDS.search(text), text
        assert not re.search(FR_MONTHS, text), text
    dated = [m for m in customer + sellers if "before" in m["body"]]
    assert len(dated) >= 2
    for m in dated:
        assert re.search(rf"before ({EN_MONTHS}) \d{{1,2}}, \d{{4}}.*\(Paris time\)", m["body"]), m
