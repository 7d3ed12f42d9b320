"""An HTTP server on a free loopback port, in a thread: what the network fakes (tests/fakes) and
the webhook receivers (tests/webhook_receiver.py, tests/faultkit.py) share."""

import threading
from http.server import ThreadingHTTPServer


class LocalServer:
    """Subclasses give `_handler_class()`. A handler brackets each request with `_begin()` and
    `_end()`, so that `stop()` and `wait_idle()` wait for the requests being answered."""

    def __init__(self):
        self._lock = threading.RLock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
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
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def base_url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

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
