"""An SMTP sink for the dev stack and the tests: accepts every message and keeps it.

- Messages with the same `Message-ID` header are kept ONCE (the project derives Message-ID from its
  idempotent message key, so a send retried after a crash shows up once, as it would for the
  customer's mail provider); `duplicates_dropped` counts the others. Messages without a Message-ID
  are all kept.
- With a maildir, each message is saved as a .eml file (the raw message, preceded by X-Sink-*
  headers holding the envelope and the time received) and the directory is reloaded at start, so a
  restarted sink still shows — and still deduplicates against — what it received before.
- A message is kept raw on arrival (only its Message-ID read) and parsed when first read: receiving
  costs the sink little, as a mail provider's acceptance costs us nothing (the benchmark's stand-in).
- With `announce` (host, port), the Message-ID of each message kept is sent there as a UDP datagram:
  the benchmark's driver acts on a case when the email asking for it arrives, as a seller does.
- With a web port, a small web view: `GET /` an HTML list, `GET /messages` JSON
  (`?to=address` keeps the messages delivered to that address, `?case_id=` those of one case).

    python -m devstack.smtp_sink --port 1025 --web-port 8025 --maildir .data/mail
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import signal
import socket
import threading
import uuid
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
import uvloop

_PARSER = BytesParser(policy=policy.default)
_HEADERS = BytesHeaderParser(policy=policy.compat32)
_H_RECEIVED, _H_FROM, _H_TO = "X-Sink-Received-At", "X-Sink-Envelope-From", "X-Sink-Envelope-To"


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = part.get_content()
    except Exception:  # an undecodable part: show the raw payload rather than fail
        text = str(part.get_payload())
    return text.replace("\r\n", "\n")  # SMTP carries CRLF; show plain newlines


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_DATA(self, server, session, envelope) -> str:
        self.sink._receive(envelope.original_content or envelope.content, envelope.mail_from,
                           list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


class SmtpSink:
    def __init__(self, host: str = "127.0.0.1", port: int = 1025, maildir: Path | str | None = None,
                 web_port: int | None = None, announce: tuple[str, int] | None = None):
        self.host, self.port = host, port
        self.announce = announce
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if announce else None
        self.maildir = Path(maildir) if maildir is not None else None
        self.web_port = web_port  # 0: any free port, set to the real one by start()
        self.duplicates_dropped = 0
        self._messages: list[dict] = []
        self._seen_ids: set[str] = set()
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._web: ThreadingHTTPServer | None = None
        self._web_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SmtpSink:
        if self.maildir is not None:
            self.maildir.mkdir(parents=True, exist_ok=True)
            self._reload()
        # On uvloop, as the worker and the API: the SMTP exchange is all small reads and writes.
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, loop=uvloop.new_event_loop(),
                                      enable_SMTPUTF8=True, ready_timeout=10)
        self._controller.start()
        if self.web_port is not None:
            self._web = ThreadingHTTPServer((self.host, self.web_port), _web_handler(self))
            self._web.daemon_threads = True
            self.web_port = self._web.server_address[1]
            self._web_thread = threading.Thread(target=self._web.serve_forever, name="smtp-sink-web", daemon=True)
            self._web_thread.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._udp is not None:  # after the controller: no message arrives any more
            self._udp.close()
            self._udp = None
        if self._web is not None:
            self._web.shutdown()
            self._web.server_close()
            self._web = None
            self._web_thread.join(5)

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def web_url(self) -> str | None:
        return None if self.web_port is None else f"http://{self.host}:{self.web_port}"

    # ------------------------------------------------------------------ messages
    @property
    def messages(self) -> list[dict]:
        """Every message kept, oldest first (a copy: safe to read while mail arrives)."""
        return self.query()

    def messages_to(self, address: str) -> list[dict]:
        """The messages delivered to `address` (envelope recipient, To or Cc; case-insensitive)."""
        return self.query(to=address)

    def _receive(self, raw: bytes, mail_from: str, rcpt_tos: list[str]) -> None:
        received_at = datetime.now(timezone.utc)
        message_id = _message_id(_HEADERS.parsebytes(raw))
        with self._lock:
            if message_id is not None and message_id in self._seen_ids:
                self.duplicates_dropped += 1
                return
            file = None
            if self.maildir is not None:
                file = self._save(raw, message_id, mail_from, rcpt_tos, received_at)
            self._keep(raw, message_id, mail_from, rcpt_tos, received_at, file)
        if self._udp is not None and message_id is not None:
            self._udp.sendto(message_id.encode(), self.announce)

    def _keep(self, raw: bytes, message_id: str | None, mail_from: str, rcpt_tos: list[str],
              received_at: datetime, file: Path | None) -> None:
        """Keeps the raw message; it is parsed when first read (`query`), not while the sender waits."""
        if message_id is not None:
            self._seen_ids.add(message_id)
        self._messages.append({"raw": raw, "message_id": message_id, "mail_from": mail_from, "to": rcpt_tos,
                               "received_at": received_at.isoformat(), "file": file.name if file else None})

    def _save(self, raw: bytes, message_id: str | None, mail_from: str, rcpt_tos: list[str],
              received_at: datetime) -> Path:
        key = hashlib.sha256(message_id.encode()).hexdigest()[:16] if message_id else uuid.uuid4().hex[:16]
        name = f"{received_at:%Y%m%dT%H%M%S%f}Z-{key}.eml"
        prefix = (f"{_H_RECEIVED}: {received_at.isoformat()}\r\n"
                  f"{_H_FROM}: {mail_from}\r\n"
                  f"{_H_TO}: {', '.join(rcpt_tos)}\r\n").encode()
        tmp = self.maildir / f".{name}.tmp"
        tmp.write_bytes(prefix + raw)
        os.replace(tmp, self.maildir / name)
        return self.maildir / name

    def _reload(self) -> None:
        with self._lock:
            for path in sorted(self.maildir.glob("*.eml")):
                data = path.read_bytes()
                head = _HEADERS.parsebytes(data)
                message_id = _message_id(head)
                if message_id is not None and message_id in self._seen_ids:
                    continue
                try:
                    received_at = datetime.fromisoformat(str(head.get(_H_RECEIVED)))
                except ValueError:
                    received_at = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
                rcpt = [a.strip() for a in str(head.get(_H_TO) or "").split(",") if a.strip()]
                if not rcpt:
                    rcpt = [addr for _, addr in getaddresses([str(v) for v in head.get_all("To") or []])]
                self._keep(data, message_id, str(head.get(_H_FROM) or ""), rcpt, received_at, path)

    def query(self, to: str | None = None, case_id: str | None = None) -> list[dict]:
        """The messages (public fields only) delivered to `to` and/or about `case_id`."""
        with self._lock:
            kept = list(self._messages)
        out = []
        for m in kept:
            if "parsed" not in m:  # parsed once, by the first reader; two readers at once parse it alike
                m["parsed"] = _fields(m)
            fields = m["parsed"]
            if to and to.strip().lower() not in fields["_recipients"]:
                continue
            if case_id and fields["case_id"] != case_id:
                continue
            out.append({k: list(v) if isinstance(v, list) else v for k, v in fields.items() if not k.startswith("_")})
        return out


def _message_id(head: Message) -> str | None:
    """The Message-ID of a message's header block (read with _HEADERS: compat32, no header objects built)."""
    return (head.get("Message-ID") or "").strip() or None


def _fields(kept: dict) -> dict:
    msg = _PARSER.parsebytes(kept["raw"])
    headers = (msg.get_all("To") or []) + (msg.get_all("Cc") or [])
    header_to = [addr for _, addr in getaddresses([str(v) for v in headers])]
    return {
        "message_id": kept["message_id"],
        "from": kept["mail_from"] or str(msg.get("From") or ""),
        "to": kept["to"],
        "subject": str(msg.get("Subject") or ""),
        "body": _body(msg),
        "received_at": kept["received_at"],
        "case_id": msg.get("X-Case-Id"),
        "file": kept["file"],
        "_recipients": sorted({a.strip().lower() for a in kept["to"] + header_to if a}),
    }


# ---------------------------------------------------------------------- web view
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Mail sink</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}}
pre{{white-space:pre-wrap;margin:.3rem 0 0}}small{{color:#666}}</style></head><body>
<h1>Mail sink</h1>
<form><input name="to" placeholder="recipient address" value="{to}"> <button>Filter</button>
<a href="/">all</a> · <a href="/messages{qs}">JSON</a></form>
<p><small>{count} message(s), newest first · {dups} duplicate(s) dropped by Message-ID</small></p>
<table><tr><th>received (UTC)</th><th>from</th><th>to</th><th>subject / body</th></tr>{rows}</table>
</body></html>"""


def _web_handler(sink: SmtpSink):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(url.query).items()}
            to, case_id = params.get("to") or None, params.get("case_id") or None
            found = sink.query(to=to, case_id=case_id)
            if url.path in ("/messages", "/messages/"):
                payload = {"count": len(found), "duplicates_dropped": sink.duplicates_dropped, "messages": found}
                self._send(200, json.dumps(payload, indent=2).encode(), "application/json")
            elif url.path == "/":
                rows = "".join(
                    f"<tr><td>{html.escape(m['received_at'][:19].replace('T', ' '))}</td>"
                    f"<td>{html.escape(m['from'])}</td><td>{html.escape(', '.join(m['to']))}</td>"
                    f"<td><details><summary>{html.escape(m['subject'])}</summary>"
                    f"<pre>{html.escape(m['body'])}</pre>"
                    f"<small>Message-ID {html.escape(m['message_id'] or '-')}"
                    f"{' · case ' + html.escape(m['case_id']) if m['case_id'] else ''}</small></details></td></tr>"
                    for m in reversed(found))
                page = _PAGE.format(to=html.escape(to or ""), qs=html.escape(f"?{url.query}" if url.query else ""),
                                    count=len(found), dups=sink.duplicates_dropped, rows=rows)
                self._send(200, page.encode(), "text/html; charset=utf-8")
            else:
                self._send(404, b'{"detail": "not found"}', "application/json")

    return Handler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m devstack.smtp_sink", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1025)
    p.add_argument("--web-port", type=int, default=8025)
    p.add_argument("--no-web", action="store_true", help="no web view")
    p.add_argument("--maildir", type=Path, default=None, help="keep messages as .eml files here (reloaded at start)")
    p.add_argument("--announce", default=None, metavar="HOST:PORT",
                   help="send each kept message's Message-ID there (UDP)")
    a = p.parse_args(argv)
    announce = None
    if a.announce:
        host, _, port = a.announce.rpartition(":")
        announce = (host, int(port))
    sink = SmtpSink(a.host, a.port, a.maildir, None if a.no_web else a.web_port, announce).start()
    print(f"SMTP sink on {a.host}:{a.port}" + (f", web view {sink.web_url}" if sink.web_url else "")
          + (f", maildir {a.maildir}" if a.maildir else "") + f"; {len(sink.messages)} message(s) kept", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1):
        pass
    sink.stop()


if __name__ == "__main__":
    main()
