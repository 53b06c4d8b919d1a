"""Outgoing mail over SMTP, with a few connections kept open between messages.

Connecting, greeting (EHLO) and quitting for every message was about a third of an email's cost in the
worker and most of the SMTP server's (BENCHMARKS.md, "What the figures say"). A connection carries one
message at a time; up to IDLE_CONNECTIONS are kept for the next ones. A kept connection the server has
dropped meanwhile (idle timeout, restart) is thrown away and the message goes out on another one; any
other failure raises, and the activity is retried by Temporal (the message key keeps it sent once).

A message is written once, where it is built, and handed to the connection with its envelope (`Outgoing`):
aiosmtplib's `send_message` would copy a `Message`, flatten it and parse its From and To headers again for
the envelope. Its text is written here, with the email package's encoders for what needs encoding (the
body's quoted-printable, a non-ASCII or long header's RFC 2047 words and folding): 0.05 ms a message
against 0.23 for a compat32 `MIMEText` flattened (BENCHMARKS.md, afternoon of 2026-12-03).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.charset import BASE64, QP, Charset
from email.header import Header

import aiosmtplib

IDLE_CONNECTIONS = 4
# UTF-8 text, quoted-printable (readable in the raw message, as EmailMessage.set_content would choose
# for our mostly-Latin texts).
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
# Headers with other than ASCII (a subject with "€" or "·"): RFC 2047 base64 words, whose length is
# arithmetic; the default ("shortest") measures both encodings of every prefix while folding.
_UTF8_B64 = Charset("utf-8")
_UTF8_B64.header_encoding = BASE64
CRLF = "\r\n"
_MAX_LINE = 78  # RFC 5322's recommended line length; longer header lines are folded
_CONTENT_HEADERS = ('MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf-8"\r\n'
                    "Content-Transfer-Encoding: quoted-printable\r\n")


@dataclass(frozen=True)
class Outgoing:
    """A message ready for SMTP: its envelope and its bytes (CRLF line ends)."""
    sender: str
    recipients: tuple[str, ...]
    data: bytes


def message_id(message_key: str) -> str:
    """The Message-ID of the message with this key: a send repeated after a crash carries the same id,
    so the mail system (and our SMTP sink) shows it once."""
    return f"<{hashlib.sha256(message_key.encode()).hexdigest()[:32]}@aftersales>"


def _header_line(name: str, value: str) -> str:
    value = " ".join(value.splitlines())  # a line break in a value would start a header of its own
    if value.isascii() and len(name) + 2 + len(value) <= _MAX_LINE:
        return f"{name}: {value}{CRLF}"
    folded = Header(value, "us-ascii" if value.isascii() else _UTF8_B64, maxlinelen=_MAX_LINE, header_name=name)
    return f"{name}: {folded.encode(linesep=CRLF)}{CRLF}"


def text_message(sender: str, to: str, subject: str, body: str, headers: dict[str, str]) -> Outgoing:
    """A plain-text UTF-8 message from `sender` to `to` (bare addresses: they are the envelope too)."""
    head = "".join(_header_line(name, value)
                   for name, value in {"From": sender, "To": to, "Subject": subject, **headers}.items())
    text = _UTF8_QP.body_encode(body).replace("\n", CRLF)
    return Outgoing(sender, (to,), f"{head}{_CONTENT_HEADERS}{CRLF}{text}".encode("ascii"))


class Mailer:
    def __init__(self, host: str, port: int, timeout: float = 10):
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, mail: Outgoing) -> None:
        while self._idle:
            smtp = self._idle.pop()
            try:
                await smtp.sendmail(mail.sender, mail.recipients, mail.data)
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
            await smtp.sendmail(mail.sender, mail.recipients, mail.data)
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
