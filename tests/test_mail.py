"""activities/mail.py: messages share a kept SMTP connection; a connection the server dropped is replaced."""
from __future__ import annotations

import asyncio
from email import policy
from email.parser import BytesParser

import pytest
from aiosmtpd.controller import Controller

from activities.mail import IDLE_CONNECTIONS, Mailer, Outgoing, text_message
from tests.helpers.servers import retry_on_port_clash


class Recorder:
    """An SMTP server keeping (client port, subject) of every message: the port tells the connection."""

    def __init__(self):
        self.got: list[tuple[int, str]] = []
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.raw.append(envelope.original_content or envelope.content)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        subject = next(line for line in envelope.content.decode().splitlines() if line.startswith("Subject:"))
        self.got.append((session.peer[1], subject.removeprefix("Subject: ")))
        return "250 OK"


def start_server(recorder: Recorder, port: int | None = None) -> Controller:
    def start(p: int) -> Controller:
        c = Controller(recorder, hostname="127.0.0.1", port=p, ready_timeout=10)
        c.start()
        return c
    return start(port) if port is not None else retry_on_port_clash("test SMTP server", start)


def mail(subject: str) -> Outgoing:
    return text_message("after-sales@marketplace.example", "a@example.com", subject, "body", {})


@pytest.fixture
def server():
    recorder = Recorder()
    controller = start_server(recorder)
    yield recorder, controller
    controller.stop()


async def test_messages_one_after_another_share_one_connection(server):
    recorder, controller = server
    mailer = Mailer("127.0.0.1", controller.port)
    for i in range(3):
        await mailer.send(mail(f"m{i}"))
    assert [s for _, s in recorder.got] == ["m0", "m1", "m2"]
    assert len({port for port, _ in recorder.got}) == 1
    mailer.close()


async def test_messages_at_once_each_get_a_connection_and_a_few_are_kept(server):
    recorder, controller = server
    mailer = Mailer("127.0.0.1", controller.port)
    await asyncio.gather(*(mailer.send(mail(f"m{i}")) for i in range(IDLE_CONNECTIONS + 2)))
    assert sorted(s for _, s in recorder.got) == sorted(f"m{i}" for i in range(IDLE_CONNECTIONS + 2))
    assert len(mailer._idle) == IDLE_CONNECTIONS
    await mailer.send(mail("after"))  # on a kept connection
    assert recorder.got[-1][0] in {port for port, _ in recorder.got[:-1]}
    mailer.close()


async def test_a_kept_connection_the_server_dropped_is_replaced():
    recorder = Recorder()
    controller = start_server(recorder)
    port = controller.port
    mailer = Mailer("127.0.0.1", port)
    await mailer.send(mail("before"))
    controller.stop()  # a restart of the mail server: the kept connection is gone
    controller = start_server(recorder, port)
    try:
        await mailer.send(mail("after"))
        assert [s for _, s in recorder.got] == ["before", "after"]
        assert recorder.got[0][0] != recorder.got[1][0]
    finally:
        mailer.close()
        controller.stop()


async def test_a_server_that_is_down_raises_so_the_activity_is_retried():
    from tests.helpers.servers import closed_port

    with closed_port() as port:
        mailer = Mailer("127.0.0.1", port, timeout=2)
        with pytest.raises(OSError):
            await mailer.send(mail("nobody listens"))
        assert mailer._idle == []


async def test_a_text_message_arrives_as_written_accents_long_lines_and_headers_included(server):
    recorder, controller = server
    body = ("Bonjour Émilie,\n\nLe remboursement de 129,00 € de la commande o-1 est en cours : "
            "https://marketplace.example/cases/c-1?" + "x" * 120 + "\n\n— L'équipe après-vente\n")
    mailer = Mailer("127.0.0.1", controller.port)
    await mailer.send(text_message("after-sales@marketplace.example", "emilie@example.com",
                                   "Votre commande o-1 : remboursement de 129,00 € en cours", body,
                                   {"Message-ID": "<k1@aftersales>", "X-Case-Id": "c-1"}))
    mailer.close()
    got = BytesParser(policy=policy.default).parsebytes(recorder.raw[0])
    assert got["Subject"] == "Votre commande o-1 : remboursement de 129,00 € en cours"
    assert (got["From"], got["To"]) == ("after-sales@marketplace.example", "emilie@example.com")
    assert (got["Message-ID"], got["X-Case-Id"]) == ("<k1@aftersales>", "c-1")
    assert got.get_content_type() == "text/plain" and got.get_content_charset() == "utf-8"
    assert got.get_content().replace("\r\n", "\n") == body
    assert max(len(line) for line in recorder.raw[0].splitlines()) <= 78  # SMTP's line limit kept
    assert recorder.envelopes == [("after-sales@marketplace.example", ["emilie@example.com"])]


def test_a_long_subject_is_folded_and_a_line_break_in_a_header_starts_no_header_of_its_own():
    subject = "Votre demande de rétractation · commande o-1 · " + "un produit au nom très long " * 6
    out = text_message("after-sales@marketplace.example", "a@example.com", subject, "body\n",
                       {"X-Case-Id": "c-1\r\nBcc: everyone@example.com"})
    got = BytesParser(policy=policy.default).parsebytes(out.data)
    assert got["Subject"] == subject
    assert got["Bcc"] is None and got["X-Case-Id"] == "c-1 Bcc: everyone@example.com"
    assert max(len(line) for line in out.data.split(b"\r\n")[:-1]) <= 78
    assert b"\n" not in out.data.replace(b"\r\n", b"")  # CRLF line ends only, as SMTP carries them
