"""Outgoing mail over SMTP, with a few connections kept open between messages.

Connecting, greeting (EHLO) and quitting for every message was about a third of an email's cost in the
worker and most of the SMTP server's (BENCHMARKS.md, "What the figures say"). A connection carries one
message at a time; up to IDLE_CONNECTIONS are kept for the next ones. A kept connection the server has
dropped meanwhile (idle timeout, restart) is thrown away and the message goes out on another one; any
other failure raises, and the activity is retried by Temporal (the message key keeps it sent once).
"""
from __future__ import annotations

import hashlib
from email.charset import QP, Charset
from email.message import Message
from email.mime.text import MIMEText

import aiosmtplib

IDLE_CONNECTIONS = 4
# UTF-8 text, quoted-printable (readable in the raw message, as EmailMessage.set_content would choose
# for our mostly-Latin texts); headers with other than ASCII are RFC 2047 encoded by the generator.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def message_id(message_key: str) -> str:
    """The Message-ID of the message with this key: a send repeated after a crash carries the same id,
    so the mail system (and our SMTP sink) shows it once."""
    return f"<{hashlib.sha256(message_key.encode()).hexdigest()[:32]}@aftersales>"


def text_message(sender: str, to: str, subject: str, body: str, headers: dict[str, str]) -> Message:
    """A plain-text UTF-8 message. Built with the email package's compat32 classes: a third of the CPU
    of `EmailMessage` (0.22 against 0.70 ms with its flattening, measured), whose header objects only
    pay off when parsing."""
    msg = MIMEText(body, "plain", _UTF8_QP)
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    for name, value in headers.items():
        msg[name] = value
    return msg


class Mailer:
    def __init__(self, host: str, port: int, timeout: float = 10):
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, msg: Message) -> None:
        while self._idle:
            smtp = self._idle.pop()
            try:
                await smtp.send_message(msg)
            except ConnectionError:  # dropped while idle (aiosmtplib's SMTPServerDisconnected is one)
                smtp.close()
                continue
            except BaseException:
                smtp.close()
                raise
            self._keep(smtp)
            return
        smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, timeout=self.timeout)
        try:
            await smtp.connect()
            await smtp.send_message(msg)
        except BaseException:
            smtp.close()
            raise
        self._keep(smtp)

    def _keep(self, smtp: aiosmtplib.SMTP) -> None:
        if len(self._idle) < IDLE_CONNECTIONS and smtp.is_connected:
            self._idle.append(smtp)
        else:
            smtp.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
