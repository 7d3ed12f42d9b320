"""A real webhook receiver for tests: a local HTTP server verifying Standard Webhooks signatures.

It checks every request with the independent `standardwebhooks` package (not with ReviewFlow's
own signing code), records what it saw, and can be scripted to misbehave before it accepts:

    receiver.secret = account.settings["secret"]
    receiver.fail(503, times=2)       # then 200
    receiver.stall(1.5)              # answer only after the client's timeout
    receiver.refuse(400)             # a permanent refusal
    receiver.always(500)             # until receiver.fix()

A request whose signature does not verify is answered 401 and never consumes the script. Accepted
requests get 200 with {"id": "rcv-N", "url": "https://receiver.example/p/N"}, N numbering distinct
webhook-ids, so a duplicate (same webhook-id) gets the same answer and shows in `duplicates`.
"""

import json
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.localserver import LocalServer

PATH = "/hooks/reviewflow"


@dataclass
class Received:
    webhook_id: str
    timestamp: str
    verified: bool
    error: str = ""
    payload: dict | None = None
    body: bytes = b""
    status: int | None = None  # what the receiver answered; None while still answering
    late: bool = False  # answered after a scripted stall
    headers: dict = field(default_factory=dict)

    @property
    def accepted(self):
        return self.verified and self.status is not None and 200 <= self.status < 300


class WebhookReceiver(LocalServer):
    def __init__(self, secret=None):
        self.secret = secret
        self.received: list[Received] = []
        self._script = deque()
        self._default = ("ok",)
        self._ids: dict[str, int] = {}
        self._answer = None
        super().__init__()

    @property
    def url(self):
        return self.base_url + PATH

    # Script
    def fail(self, status=503, times=1):
        """Answer `status` to the next `times` verified requests."""
        with self._lock:
            self._script.extend([("status", status)] * times)
        return self

    def refuse(self, status=400):
        return self.fail(status, times=1)

    def stall(self, seconds, times=1):
        """Sleep `seconds` before answering 200 (the client has usually given up by then)."""
        with self._lock:
            self._script.extend([("stall", seconds)] * times)
        return self

    def always(self, status):
        with self._lock:
            self._default = ("status", status)
        return self

    def answer_with(self, payload):
        """Accept with this JSON body instead of {"id": "rcv-N", "url": ...}."""
        with self._lock:
            self._answer = payload
        return self

    def fix(self):
        with self._lock:
            self._script.clear()
            self._default = ("ok",)
        return self

    # What happened
    @property
    def accepted(self):
        """Verified requests answered 2xx, duplicates included."""
        return [r for r in self.received if r.accepted]

    @property
    def delivered_ids(self):
        """Distinct webhook-ids accepted, in order: what a deduplicating receiver processed."""
        return list(dict.fromkeys(r.webhook_id for r in self.accepted))

    @property
    def duplicates(self):
        return len(self.accepted) - len(self.delivered_ids)

    def wait_for(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    # Serving
    def _answer_for(self, record):
        """Verify, then take the next scripted action. Called with the lock held."""
        if not record.verified:
            return ("status", 401)
        return self._script.popleft() if self._script else self._default

    def _ok_body(self, webhook_id):
        with self._lock:
            number = self._ids.setdefault(webhook_id, len(self._ids) + 1)
            if self._answer is not None:
                return self._answer
        return {"id": f"rcv-{number}", "url": f"https://receiver.example/p/{number}"}

    def _handler_class(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                record = Received(
                    webhook_id=headers.get("webhook-id", ""),
                    timestamp=headers.get("webhook-timestamp", ""),
                    verified=False,
                    body=body,
                    headers=headers,
                )
                try:
                    if not receiver.secret:
                        raise WebhookVerificationError("the receiver has no secret")
                    record.payload = Webhook(receiver.secret).verify(body, headers)
                    record.verified = True
                except (WebhookVerificationError, ValueError) as error:
                    record.error = f"{error.__class__.__name__}: {error}"
                with receiver._lock:
                    receiver.received.append(record)
                    receiver._begin()
                    action = receiver._answer_for(record)
                try:
                    if action[0] == "stall":
                        time.sleep(action[1])
                        record.late = True
                        self._reply(200, receiver._ok_body(record.webhook_id), record)
                    elif action[0] == "ok":
                        self._reply(200, receiver._ok_body(record.webhook_id), record)
                    elif record.verified:
                        self._reply(action[1], {"error": f"scripted {action[1]}"}, record)
                    else:
                        self._reply(action[1], {"error": record.error}, record)
                finally:
                    receiver._end()

            def _reply(self, status, payload, record):
                record.status = status
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout) and closed the connection

        return Handler
