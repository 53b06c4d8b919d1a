"""Outgoing mail over SMTP, with a few connections kept open between messages.

Connecting, greeting (EHLO) and quitting for every message was about a third of an email's cost in the
worker and most of the SMTP server's (BENCHMARKS.md, "What the figures say"). A connection carries one
message at a time; up to IDLE_CONNECTIONS are kept for the next ones. A kept connection the server has
dropped meanwhile (idle timeout, restart) is thrown away and the message goes out on another one; any
other failure raises, and the activity is retried by Temporal (the message key keeps it sent once).
"""
from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

IDLE_CONNECTIONS = 4


class Mailer:
    def __init__(self, host: str, port: int, timeout: float = 10):
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[aiosmtplib.SMTP] = []

    async def send(self, msg: EmailMessage) -> None:
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
