"""notify, the activity every case email goes through: once per message key whatever the retries, a
failed attempt recorded (pending, its attempts), the recipient's locale, a care message without lookup."""
from __future__ import annotations

import dataclasses
import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.cases import CaseActivities
from activities.mail import message_id
from domain.models import Notification, Role
from tests.helpers.data import make_party
from tests.helpers.servers import closed_port


def note(party: dict, role: Role = Role.customer, **kw) -> Notification:
    key = f"test-notify-{uuid.uuid4().hex[:10]}"
    who = {Role.customer: party["customer_id"], Role.seller: party["seller_id"], Role.agent: "care"}[role]
    return Notification(message_key=key, recipient_role=role, recipient_id=who, case_id=f"case-{key}",
                        subject="Votre commande · remboursement", body="Bonjour,\nc'est fait.\n", **kw)


def arrived(mail_sink, n: Notification) -> list[dict]:
    return [m for m in mail_sink.messages if m["message_id"] == message_id(n.message_key)]


async def row(pool, n: Notification):
    return await pool.fetchrow("SELECT * FROM sent_messages WHERE message_key = $1 AND channel = 'email'",
                               n.message_key)


async def test_an_email_goes_once_whatever_the_retries_and_is_recorded_as_sent(pool, test_settings, mail_sink):
    party = await make_party(pool)
    acts, env = CaseActivities(test_settings), ActivityEnvironment()
    n = note(party)
    for _ in range(3):  # the activity retried after it had sent (a crash before its completion reached Temporal)
        assert await env.run(acts.notify, n) is False
    assert len(arrived(mail_sink, n)) == 1
    r = await row(pool, n)
    assert (r["status"], r["recipient"], r["subject"], r["attempts"]) == ("sent", party["customer_email"],
                                                                          n.subject, 0)
    assert r["sent_at"] is not None


async def test_a_failed_attempt_is_recorded_pending_then_the_retry_sends_it(pool, test_settings, mail_sink):
    party = await make_party(pool)
    env = ActivityEnvironment()
    n = note(party)
    with closed_port() as port:  # the mail server is down
        down = CaseActivities(dataclasses.replace(test_settings, smtp_port=port))
        with pytest.raises(OSError):
            await env.run(down.notify, n)
    r = await row(pool, n)
    assert (r["status"], r["attempts"], r["sent_at"]) == ("pending", 0, None)
    assert arrived(mail_sink, n) == []
    assert await env.run(CaseActivities(test_settings).notify, n) is False
    r = await row(pool, n)
    assert (r["status"], r["attempts"]) == ("sent", 1) and r["sent_at"] is not None
    assert len(arrived(mail_sink, n)) == 1


async def test_an_erased_pending_row_keeps_its_erasure_when_the_message_goes(pool, test_settings, mail_sink):
    party = await make_party(pool)
    env = ActivityEnvironment()
    n = note(party)
    with closed_port() as port:
        with pytest.raises(OSError):
            await env.run(CaseActivities(dataclasses.replace(test_settings, smtp_port=port)).notify, n)
    await pool.execute("UPDATE sent_messages SET recipient = '[erased]', body = '[erased]' WHERE message_key = $1",
                       n.message_key)
    await env.run(CaseActivities(test_settings).notify, n)
    r = await row(pool, n)
    assert (r["status"], r["recipient"], r["body"]) == ("sent", "[erased]", "[erased]")


async def test_a_seller_with_a_webhook_is_told_so_and_care_needs_no_lookup(pool, test_settings, mail_sink):
    party = await make_party(pool)
    await pool.execute("UPDATE sellers SET webhook_url = 'https://seller.example/hook' WHERE seller_id = $1",
                       party["seller_id"])
    acts, env = CaseActivities(test_settings), ActivityEnvironment()
    seller = note(party, Role.seller)
    assert await env.run(acts.notify, seller) is True  # the workflow then delivers the webhook beside
    assert await env.run(acts.notify, seller) is True  # and again on a retry, the email not sent twice
    assert len(arrived(mail_sink, seller)) == 1
    care = note(party, Role.agent)
    assert await env.run(acts.notify, care) is False
    assert [m["to"] for m in arrived(mail_sink, care)] == [[test_settings.care_email]]


async def test_an_unknown_recipient_fails_for_good(pool, test_settings):
    n = Notification(message_key=f"test-notify-{uuid.uuid4().hex[:10]}", recipient_role=Role.customer,
                     recipient_id="nobody", subject="s", body="b")
    with pytest.raises(ApplicationError) as e:
        await ActivityEnvironment().run(CaseActivities(test_settings).notify, n)
    assert e.value.type == "UnknownRecipient" and e.value.non_retryable
