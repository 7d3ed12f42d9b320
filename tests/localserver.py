"""An HTTP server on a free loopback port, in a thread: what the network fakes (tests/fakes) and
the webhook receivers (tests/webhook_receiver.py, tests/faultkit.py) share."""

import socket
import ssl
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path


class _Server(ThreadingHTTPServer):
    """Answers without Nagle's delay, as a network's servers do (a reply written in two parts
    would otherwise wait 40 ms for the client's delayed acknowledgement on a kept-alive or TLS
    connection). Knows its open connections: a client keeps them alive between requests, and a
    server that stops (an outage, in the fault tests) must close them, as a process that dies
    does."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, *args):
        self.connections = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args)

    def process_request(self, request, client_address):
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        with self._connections_lock:
            open_now = list(self.connections)
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed by the other side meanwhile
                pass


class LocalServer:
    """Subclasses give `_handler_class()`. A handler brackets each request with `_begin()` and
    `_end()`, so that `stop()` and `wait_idle()` wait for the requests being answered.

    `tls`: (certificate file, key file) to answer over HTTPS, as a network does."""

    def __init__(self, tls=None):
        self._lock = threading.RLock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(  # a short poll: shutdown() returns at once
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _handler_class(self):
        raise NotImplementedError

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.wait_idle(timeout=5)
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self):
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def _begin(self):
        with self._lock:
            self._in_flight += 1

    def _end(self):
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout=10):
        """Wait until no request is being answered (a stalled one may still be sleeping)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout)


def self_signed_certificate(directory):
    """(certificate file, key file) for 127.0.0.1, valid for a day, for `LocalServer(tls=…)`
    and the like: a client trusts it through REQUESTS_CA_BUNDLE=<certificate file>, or not."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = Path(directory) / "receiver.crt", Path(directory) / "receiver.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)
