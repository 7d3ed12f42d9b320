"""A small base for fake network APIs: a real HTTP server on 127.0.0.1, in a thread.

A subclass answers in `route(request) -> Reply` and says how its network shapes an error in
`error(status, request, **details)`. The base records every request (JSON, form and multipart
bodies parsed), and plays a script of misbehaviour before the subclass sees a request:

    fake.fail(503)                          # the next request is answered 503
    fake.fail(429, on="POST /2/tweets")     # only a matching request ("METHOD /path" prefix)
    fake.stall(1.5)                         # answered late; the request is still processed
    fake.fix()                              # forget the script

    with FakeSomething() as fake: ...       # started on a free port, stopped at the end
"""

import json
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.localserver import LocalServer


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class Request:
    method: str
    path: str
    query: dict  # name -> [values]
    headers: dict  # lower-case names
    body: bytes
    json: Any = None
    form: dict = field(default_factory=dict)  # name -> [values], urlencoded or multipart fields
    files: dict = field(default_factory=dict)  # name -> Upload
    status: int | None = None  # what the fake answered
    late: bool = False  # answered after a scripted stall

    @property
    def bearer(self):
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    @property
    def content_type(self):
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Reply:
    status: int
    body: Any = None  # dict or list: JSON; bytes: as is; None: empty
    headers: dict = field(default_factory=dict)


class FakeServer(LocalServer):
    def __init__(self):
        self.received: list[Request] = []
        self._script = deque()
        self._default = None
        super().__init__()

    @property
    def url(self):
        return self.base_url

    # Script
    def fail(self, status, times=1, on=None, **details):
        """Answer the next `times` requests (matching `on`) with the network's `status` error."""
        with self._lock:
            self._script.extend([("error", status, on, details)] * times)
        return self

    def stall(self, seconds, times=1, on=None):
        """Sleep `seconds`, then process and answer as usual (the client has given up by then)."""
        with self._lock:
            self._script.extend([("stall", seconds, on, {})] * times)
        return self

    def always(self, status, **details):
        with self._lock:
            self._default = ("error", status, None, details)
        return self

    def fix(self):
        with self._lock:
            self._script.clear()
            self._default = None
        return self

    # What happened
    def calls(self, method, path):
        """Requests with this method whose path starts with `path`, in order."""
        return [r for r in self.received if r.method == method and r.path.startswith(path)]

    # Subclass hooks
    def route(self, request) -> Reply:
        raise NotImplementedError

    def error(self, status, request, **details) -> Reply:
        return Reply(status, {"error": details.get("message") or f"scripted {status}"})

    # Serving
    def _next_action(self, request):
        with self._lock:
            for step in self._script:
                on = step[2]
                if on is None or f"{request.method} {request.path}".startswith(on):
                    self._script.remove(step)
                    return step
            return self._default

    def _answer(self, request):
        action = self._next_action(request)
        if action and action[0] == "stall":
            time.sleep(action[1])
            request.late = True
        elif action:
            return self.error(action[1], request, **action[3])
        try:
            _parse_body(request)
        except ValueError as error:
            return self.error(400, request, message=f"malformed body: {error}")
        with self._lock:  # the fake's state is simple: one request changes it at a time
            return self.route(request)

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with fake._lock:
                    fake.received.append(request)
                    fake._begin()
                try:
                    self._reply(fake._answer(request), request)
                finally:
                    fake._end()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def _reply(self, reply, request):
                request.status = reply.status
                body = reply.body
                if isinstance(body, dict | list):
                    data, kind = json.dumps(body).encode(), "application/json; charset=utf-8"
                else:
                    data, kind = body or b"", "application/octet-stream"
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", kind)
                    self.send_header("content-length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, str(value))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout) and closed the connection

        return Handler


def _parse_body(request):
    kind = request.content_type
    if not request.body:
        return
    if kind == "application/json":
        try:
            request.json = json.loads(request.body)
        except ValueError as error:
            raise ValueError(f"invalid JSON ({error})") from None
    elif kind == "application/x-www-form-urlencoded":
        request.form = parse_qs(request.body.decode(), keep_blank_values=True)
    elif kind == "multipart/form-data":
        head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + request.body)
        if not message.is_multipart():
            raise ValueError("multipart body without parts")
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                raise ValueError("a multipart part without a name")
            data = part.get_payload(decode=True) or b""
            if part.get_filename() is not None:
                request.files[name] = Upload(part.get_filename(), part.get_content_type(), data)
            else:
                request.form.setdefault(name, []).append(data.decode())
