"""A local SMTP sink for the demo: every mail Odoo sends lands as a file, none leaves.

Just enough of RFC 5321 for Odoo's ``smtplib`` client (EHLO/HELO, MAIL, RCPT, DATA,
RSET, NOOP, QUIT; no TLS, no AUTH), on 127.0.0.1, in a thread of the process that
starts it. Each message is written to ``<workdir>/mail/<n>.eml``, so a newcomer
reads the demo's invitation mails (and their links) there.
"""

import socketserver
import threading
from pathlib import Path

from . import util
from .service import Service


class _Handler(socketserver.StreamRequestHandler):
    timeout = 60

    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 saas-sandbox SMTP sink")
        sender, recipients = None, []
        while True:
            raw = self.rfile.readline(65536)
            if not raw:
                return
            command = raw.decode(errors="replace").strip()
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250 saas-sandbox")
            elif verb == "MAIL":
                sender, recipients = command, []
                self.reply("250 OK")
            elif verb == "RCPT":
                recipients.append(command)
                self.reply("250 OK")
            elif verb == "DATA":
                if not (sender and recipients):
                    self.reply("503 MAIL and RCPT first")
                    continue
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while True:
                    line = self.rfile.readline(1 << 20)
                    if not line or line in (b".\r\n", b".\n"):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                self.server.sink.store(b"".join(lines))
                sender, recipients = None, []
                self.reply("250 OK: stored")
            elif verb in ("RSET", "NOOP"):
                sender, recipients = (None, []) if verb == "RSET" else (sender, recipients)
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class SmtpSink(Service):
    """``with SmtpSink(workdir) as sink:`` then point Odoo at ``127.0.0.1:sink.port``."""

    name = "smtp"
    log_name = "smtp.log"

    def __init__(self, workdir=None, port=None):
        super().__init__(workdir)
        self.port = port
        self._server = None
        self._lock = threading.Lock()

    @property
    def mail_dir(self):
        return Path(self.workdir) / "mail"

    def _start(self):
        self.mail_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or util.free_port()
        self._server = _Server((util.LOOPBACK, self.port), _Handler)
        self._server.sink = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.started = True

    def _stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def store(self, message):
        with self._lock:
            number = len(list(self.mail_dir.glob("*.eml"))) + 1
            path = self.mail_dir / f"{number:04d}.eml"
            path.write_bytes(message)
        return path
