"""A scriptable HTTP peer on 127.0.0.1 for the standalone tests.

:class:`Peer` is a raw-socket server running in a thread. It reads one HTTP
request per connection, records it, then hands the connection to a handler
that decides the exact bytes sent and their timing: a well-formed JSON-RPC
answer echoing the request's id, an HTTP error, a trickle, silence...
Every socket has a timeout, every loop and wait is bounded, and
:meth:`Peer.stop` ends the handlers that are still waiting.
"""

import datetime
import ipaddress
import json
import socket
import ssl
import threading
from dataclasses import dataclass

HOST = "127.0.0.1"
IO_TIMEOUT = 5.0
MAX_REQUEST_BYTES = 1024 * 1024
LONG_WAIT = 60.0

ODOO_VERSION = {
    "server_version": "18.0",
    "server_version_info": [18, 0, 0, "final", 0, ""],
    "server_serie": "18.0",
    "protocol_version": 1,
}


@dataclass
class Request:
    method: str
    path: str
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def rpc_id(self):
        try:
            return self.json().get("id")
        except ValueError:
            return None


class Connection:
    """What a handler gets: send bytes, wait (cut short when the peer stops)."""

    def __init__(self, sock, stopping):
        self.sock = sock
        self._stopping = stopping

    def send(self, data):
        """Send ``data``; False once the client has gone away."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def wait(self, seconds):
        """Sleep ``seconds``; False when the peer is stopping."""
        return not self._stopping.wait(seconds)


class Peer:
    """A server on ``127.0.0.1:<free port>``; ``handler(request, connection)``."""

    def __init__(self, handler, *, tls_context=None):
        self.handler = handler
        self.tls_context = tls_context
        self.requests = []
        self.connections = 0
        self.errors = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._serve, name=f"peer {self.port}")

    @property
    def url(self):
        scheme = "https" if self.tls_context else "http"
        return f"{scheme}://{HOST}:{self.port}"

    def start(self):
        self._acceptor.start()
        return self

    def stop(self):
        self._stopping.set()
        self._acceptor.join(IO_TIMEOUT)
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(IO_TIMEOUT)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _serve(self):
        while not self._stopping.is_set():
            try:
                sock, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(sock,), daemon=True)
            with self._lock:
                self.connections += 1
                self._threads.append(thread)
            thread.start()

    def _handle(self, sock):
        sock.settimeout(IO_TIMEOUT)
        try:
            if self.tls_context is not None:
                try:
                    sock = self.tls_context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused our certificate, or spoke no TLS
            request = _read_request(sock)
            if request is None:
                # Not HTTP (a TLS hello on a plain port...): answer like a
                # real server does.
                Connection(sock, self._stopping).send(
                    response(400, b"Bad Request", content_type="text/plain")
                )
                return
            with self._lock:
                self.requests.append(request)
            self.handler(request, Connection(sock, self._stopping))
        except Exception as exc:  # recorded for the test to see
            with self._lock:
                self.errors.append(exc)
        finally:
            sock.close()


def _recv_more(sock, data):
    """``data`` plus what the socket gives next; None at EOF or on an error."""
    try:
        chunk = sock.recv(65536)
    except OSError:
        return None
    return data + chunk if chunk else None


def _read_request(sock):
    """One HTTP request, or None when what came is not HTTP."""
    data = b""
    # Bounded: each pass grows ``data`` or ends it, up to MAX_REQUEST_BYTES.
    while (
        data is not None
        and b"\r\n\r\n" not in data
        and len(data) <= MAX_REQUEST_BYTES
        and (not data or data[:1].isalpha())
    ):
        data = _recv_more(sock, data)
    if data is None or b"\r\n\r\n" not in data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    while body is not None and len(body) < length <= MAX_REQUEST_BYTES:
        body = _recv_more(sock, body)
    if body is None or len(body) < length:
        return None
    return Request(parts[0], parts[1], headers, body)


# --- building answers -----------------------------------------------------

REASONS = {
    200: "OK",
    302: "Found",
    400: "Bad Request",
    404: "Not Found",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def response(status, body=b"", *, content_type="application/json", headers=None):
    """A complete HTTP/1.1 answer with Content-Length and Connection: close."""
    if isinstance(body, str):
        body = body.encode()
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    lines.extend(f"{name}: {value}" for name, value in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def rpc_answer(request, *, result=None, error=None, answer_id=None):
    """A JSON-RPC 2.0 answer body echoing ``request``'s id (unless given)."""
    payload = {"jsonrpc": "2.0", "id": request.rpc_id if answer_id is None else answer_id}
    if error is not None:
        payload["error"] = error
    else:
        payload["result"] = result
    return json.dumps(payload).encode()


def odoo_error(message, name, code=200):
    """The ``error`` object Odoo's JsonRPCDispatcher builds for an exception."""
    return {
        "code": code,
        "message": "Odoo Server Error",
        "data": {
            "name": name,
            "debug": "Traceback (most recent call last):\n  ...\n",
            "message": message,
            "arguments": [message],
            "context": {},
        },
    }


# --- handlers -------------------------------------------------------------


def odoo_version(server_version="18.0"):
    """Answer like Odoo's ``common.version``."""
    result = dict(ODOO_VERSION, server_version=server_version)

    def handler(request, connection):
        connection.send(response(200, rpc_answer(request, result=result)))

    return handler


def rpc_result(result, *, answer_id=None):
    def handler(request, connection):
        connection.send(response(200, rpc_answer(request, result=result, answer_id=answer_id)))

    return handler


def rpc_error(error):
    def handler(request, connection):
        connection.send(response(200, rpc_answer(request, error=error)))

    return handler


def raw(data):
    """Send exactly ``data`` (bytes) and close."""

    def handler(_request, connection):
        connection.send(data)

    return handler


def delayed(seconds, then):
    """Wait ``seconds`` (less if the peer stops), then answer with ``then``."""

    def handler(request, connection):
        if connection.wait(seconds):
            then(request, connection)

    return handler


def silent(seconds=LONG_WAIT):
    """Read the request, then send nothing at all for ``seconds``."""

    def handler(_request, connection):
        connection.wait(seconds)

    return handler


def trickle(head, body, interval):
    """Send ``head`` at once, then ``body`` one byte every ``interval`` s."""

    def handler(_request, connection):
        if not connection.send(head):
            return
        for index in range(len(body)):
            if not connection.wait(interval) or not connection.send(body[index : index + 1]):
                return

    return handler


def hold_after(data, seconds=LONG_WAIT):
    """Send ``data``, then keep the connection open, silent, for ``seconds``."""

    def handler(_request, connection):
        if connection.send(data):
            connection.wait(seconds)

    return handler


def chunked_head(content_type="application/json"):
    return (
        "HTTP/1.1 200 OK\r\n"
        f"Content-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def chunk(data):
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# --- helpers --------------------------------------------------------------


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def self_signed_certificate(directory):
    """Write a self-signed certificate for 127.0.0.1/localhost; its paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "saas_manager test peer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address(HOST)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "peer-cert.pem"
    key_path = directory / "peer-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def tls_server_context(cert_path, key_path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert_path), str(key_path))
    return context


class Peers:
    """Start peers for one test and stop them all at its end."""

    def __init__(self):
        self._peers = []

    def __call__(self, handler, **kwargs):
        peer = Peer(handler, **kwargs).start()
        self._peers.append(peer)
        return peer

    def stop_all(self):
        for peer in self._peers:
            peer.stop()
