"""The dev stack's SMTP sink, with real mail sent over SMTP by aiosmtplib (what the activities use)."""
from __future__ import annotations

import asyncio
import json
import sys
from email.message import EmailMessage

import aiosmtplib
import httpx
import pytest

from devstack.postgres import free_port
from devstack.smtp_sink import SmtpSink
from tests.helpers.servers import ServerStartError, lost_port_race, start_smtp_sink


def mail(to: str, subject: str, body: str, message_id: str | None = None, case_id: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "after-sales@marketplace.example"
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    if case_id:
        msg["X-Case-Id"] = case_id
    msg.set_content(body)
    return msg


async def send(sink: SmtpSink, msg: EmailMessage) -> None:
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=sink.port, timeout=10)


@pytest.fixture
def sink(tmp_path):
    s = start_smtp_sink(maildir=tmp_path / "mail", web_port=0)
    yield s
    s.stop()


async def test_messages_are_kept_with_their_fields(sink):
    await send(sink, mail("alice@example.com", "Your case c1 is open", "Hello Alice,\nwe got it. 42,90 €",
                          "<m1@aftersales>", case_id="c1"))
    await send(sink, mail("Bob Durand <bob@example.com>", "Refund sent", "Hello Bob"))
    msgs = sink.messages
    assert [m["subject"] for m in msgs] == ["Your case c1 is open", "Refund sent"]
    first = msgs[0]
    assert first["message_id"] == "<m1@aftersales>"
    assert first["from"] == "after-sales@marketplace.example"
    assert first["to"] == ["alice@example.com"]
    assert first["body"].strip() == "Hello Alice,\nwe got it. 42,90 €"
    assert first["case_id"] == "c1"
    assert first["received_at"]
    assert msgs[1]["to"] == ["bob@example.com"] and msgs[1]["message_id"] is None
    assert [m["subject"] for m in sink.messages_to("BOB@example.com")] == ["Refund sent"]
    assert sink.duplicates_dropped == 0


async def test_same_message_id_is_kept_once(sink):
    for _ in range(3):  # a send retried after a lost answer carries the same Message-ID
        await send(sink, mail("alice@example.com", "Refund activated", "once", "<refund-1@aftersales>"))
    await send(sink, mail("alice@example.com", "Refund settled", "other", "<refund-2@aftersales>"))
    # without a Message-ID nothing can tell two sends apart: both are kept
    await send(sink, mail("alice@example.com", "No id", "a"))
    await send(sink, mail("alice@example.com", "No id", "a"))
    assert [m["subject"] for m in sink.messages] == ["Refund activated", "Refund settled", "No id", "No id"]
    assert sink.duplicates_dropped == 2
    assert len(list(sink.maildir.glob("*.eml"))) == 4


async def test_maildir_is_reloaded_after_a_restart_and_still_deduplicates(tmp_path):
    maildir = tmp_path / "mail"
    first = start_smtp_sink(maildir=maildir, web_port=None)
    port = first.port  # the restart below takes the same port again, as `make run` does
    try:
        await send(first, mail("alice@example.com", "Before restart", "kept on disk", "<keep-1@aftersales>",
                               case_id="c9"))
        before = first.messages
    finally:
        first.stop()
    assert len(list(maildir.glob("*.eml"))) == 1

    second = SmtpSink("127.0.0.1", port, maildir, None).start()
    try:
        reloaded = second.messages
        assert len(reloaded) == 1
        # everything, including the envelope and the time received, survives the restart
        assert {k: v for k, v in reloaded[0].items() if k != "file"} == \
               {k: v for k, v in before[0].items() if k != "file"}
        await send(second, mail("alice@example.com", "Before restart", "kept on disk", "<keep-1@aftersales>"))
        await send(second, mail("alice@example.com", "After restart", "new", "<keep-2@aftersales>"))
        assert [m["subject"] for m in second.messages] == ["Before restart", "After restart"]
        assert second.duplicates_dropped == 1
    finally:
        second.stop()


async def test_envelope_recipients_include_bcc(sink):
    msg = mail("alice@example.com", "Copy to care", "x", "<bcc-1@aftersales>")
    await aiosmtplib.send(msg, hostname="127.0.0.1", port=sink.port,
                          recipients=["alice@example.com", "care@marketplace.example"])
    assert sink.messages[0]["to"] == ["alice@example.com", "care@marketplace.example"]
    assert len(sink.messages_to("care@marketplace.example")) == 1


async def test_web_view_lists_and_filters(sink):
    await send(sink, mail("alice@example.com", "For <Alice>", "a", "<w1@aftersales>", case_id="case_a"))
    await send(sink, mail("bob@example.com", "For Bob", "b", "<w2@aftersales>"))
    await send(sink, mail("bob@example.com", "For Bob", "b", "<w2@aftersales>"))
    async with httpx.AsyncClient(base_url=sink.web_url, timeout=5) as http:
        everything = (await http.get("/messages")).json()
        assert [m["subject"] for m in everything["messages"]] == ["For <Alice>", "For Bob"]
        assert everything["count"] == 2 and everything["duplicates_dropped"] == 1
        assert set(everything["messages"][0]) >= {"message_id", "from", "to", "subject", "body", "received_at"}

        bob = (await http.get("/messages", params={"to": "bob@example.com"})).json()
        assert [m["subject"] for m in bob["messages"]] == ["For Bob"]
        by_case = (await http.get("/messages", params={"case_id": "case_a"})).json()
        assert [m["subject"] for m in by_case["messages"]] == ["For <Alice>"]
        assert (await http.get("/messages", params={"to": "nobody@example.com"})).json()["messages"] == []

        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "For &lt;Alice&gt;" in page.text and "For Bob" in page.text  # escaped, never raw HTML
        assert (await http.get("/nowhere")).status_code == 404


async def start_sink_module(maildir, attempts: int = 5):
    """`python -m devstack.smtp_sink` on free ports, again on others when it lost them to another
    process. Returns (process, smtp port, web port, banner)."""
    for attempt in range(1, attempts + 1):
        port, web_port = free_port(), free_port()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devstack.smtp_sink", "--port", str(port),
            "--web-port", str(web_port), "--maildir", str(maildir),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        banner = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        if f":{port}" in banner:
            return proc, port, web_port, banner
        rest = banner + (await asyncio.wait_for(proc.stdout.read(), 15)).decode()
        await proc.wait()
        if not (lost_port_race(rest) and attempt < attempts):
            raise ServerStartError("python -m devstack.smtp_sink", port, f"exited with {proc.returncode}", rest)


async def test_runs_as_a_module(tmp_path):
    proc, port, web_port, banner = await start_sink_module(tmp_path / "mail")
    try:
        assert f":{port}" in banner
        await aiosmtplib.send(mail("alice@example.com", "Via the module", "x", "<mod-1@aftersales>"),
                              hostname="127.0.0.1", port=port, timeout=10)
        async with httpx.AsyncClient(timeout=5) as http:
            listed = json.loads((await http.get(f"http://127.0.0.1:{web_port}/messages")).text)
        assert [m["subject"] for m in listed["messages"]] == ["Via the module"]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert len(list((tmp_path / "mail").glob("*.eml"))) == 1


async def test_each_kept_message_is_announced_once_to_the_benchmark_driver():
    """The benchmark's seller acts when the email asking for the label arrives: the sink sends each kept
    message's Message-ID to the driver's MailWatch (UDP); a duplicate, dropped, is not announced again."""
    from activities.mail import message_id
    from bench.scenarios import MailWatch
    from workflows.common import message_key

    watch = await MailWatch().start("127.0.0.1")
    sink = start_smtp_sink(web_port=None, announce=("127.0.0.1", watch.port))
    try:
        asked = message_id(message_key("case_1", "label-asked"))
        waiting = asyncio.ensure_future(watch.arrived(asked, timeout=5))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # nothing came yet
        for _ in range(2):
            await send(sink, mail("seller@example.com", "Label, please", "x", asked, case_id="case_1"))
        assert await waiting is True
        assert sink.duplicates_dropped == 1
        assert await watch.arrived(asked, timeout=0.2) is False  # announced once, and taken
        # a message already announced when the driver starts waiting is found at once
        other = message_id(message_key("case_2", "label-asked"))
        await send(sink, mail("seller@example.com", "Label, please", "y", other, case_id="case_2"))
        assert await watch.arrived(other, timeout=5) is True
    finally:
        sink.stop()
        watch.close()
