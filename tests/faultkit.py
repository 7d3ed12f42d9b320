"""Pieces for fault tests and the release benchmark: processes to kill, a receiver that counts.

- `RedisServer`: a private redis-server on a free port (never the machine's shared one), that can be
  killed with SIGKILL and started again on the same port, empty: every message in it is lost.
- `CeleryProcess`, `worker()`, `beat()`: a real Celery worker (one process, solo pool) or beat,
  started against a given broker and database, killed with SIGKILL, restarted. Beat runs the
  project's own schedule, the delivery sweeps (release due posts, the outbox, stalled deliveries)
  shortened to a few seconds (`python -m tests.faultkit beat`), so a test does not wait a
  minute per tick.
- `broker()`: point this process's Celery app at a broker (tasks enqueued on commit go there).
- `CountingReceiver`: a local Standard Webhooks receiver that behaves like a real idempotent one:
  it verifies the signature, processes each webhook-id once and drops a repeated one (answering as
  the first time), and counts requests, distinct deliveries, duplicates dropped and posts processed
  under more than one webhook-id. `hold_next()` freezes the next new delivery after the receiver
  has processed it and before it answers, so a test can kill the sender at exactly that moment.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import quote

import kombu.pools

from tests.localserver import LocalServer

ROOT = Path(__file__).resolve().parent.parent
QUEUES = ("default", "publishing", "maintenance", "notifications")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(connection):
    """The URL of the database a Django connection uses (in tests: the test database)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


def wait_until(predicate, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- Redis ----------------------------------------------------------------------------------------


class RedisServer:
    """A private, memory-only redis-server on 127.0.0.1 (a free port unless given)."""

    def __init__(self, workdir, port=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.process = None
        self.restarts = 0
        self.log = self.workdir / f"redis-{self.port}.log"

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout=10):
        import redis

        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis.from_url(self.url(), socket_connect_timeout=1)

        def answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.log}:\n{self.log.read_text()}")
            try:
                return client.ping()
            except redis.RedisError:
                return False

        if not wait_until(answers, timeout, 0.05):
            raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout} s")
        client.close()
        return self

    def kill(self):
        """SIGKILL: no shutdown save (there is none anyway), every message in it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def restart(self):
        self.kill()
        self.start()
        self.restarts += 1

    stop = kill

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --- Celery processes -----------------------------------------------------------------------------


def service_env(broker_url, database_url, **extra):
    """The environment of a worker or beat: our broker and database, tasks not eager."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_BROKER_URL": broker_url,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env


class CeleryProcess:
    """One Celery process (its own session, so a kill reaches nothing else), log to a file."""

    def __init__(self, name, argv, env, log_path):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = Path(log_path)
        self.process = None
        self.kills = 0
        self.starts = 0

    @property
    def alive(self):
        return self.process is not None and self.process.poll() is None

    def start(self):
        with open(self.log_path, "a") as log:
            log.write(f"\n===== {self.name}: start {self.starts + 1} =====\n")
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        return self

    def kill(self):
        """SIGKILL, as a crashed machine or the OOM killer would: no cleanup, no ack."""
        if self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
            self.kills += 1

    def stop(self, timeout=10):
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def restart(self):
        self.kill()
        return self.start()

    def log_tail(self, chars=20000):
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def worker(env, log_path, name="faultkit", loglevel="info"):
    """A real worker: one process (solo pool), every queue, as `make run` starts it."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "reviewflow",
        "worker",
        "-Q",
        ",".join(QUEUES),
        "--pool=solo",
        "-l",
        loglevel,
        "-n",
        f"{name}-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    return CeleryProcess("worker", argv, env, log_path)


DELIVERY_SWEEPS = ("release-due-posts", "deliver-due-publications", "recover-stalled-publications")


def beat(env, log_path, schedule_path, interval=2.0, entries=DELIVERY_SWEEPS):
    """A real beat running the project's schedule, these entries every `interval` seconds."""
    argv = [
        sys.executable, "-m", "tests.faultkit", "beat",
        str(schedule_path), str(interval), ",".join(entries),
    ]  # fmt: skip
    return CeleryProcess("beat", argv, env, log_path)


def _run_beat(schedule_path, interval, entries):
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from reviewflow.celery import app

    schedule = {name: dict(entry) for name, entry in app.conf.beat_schedule.items()}
    missing = set(entries) - set(schedule)
    if missing:
        sys.exit(f"faultkit beat: no such entries in CELERY_BEAT_SCHEDULE: {sorted(missing)}")
    for name in entries:
        every = schedule[name]["schedule"]
        if isinstance(every, timedelta):
            every = every.total_seconds()
        schedule[name]["schedule"] = min(float(every), interval)
    app.conf.beat_schedule = schedule
    shown = {name: str(entry["schedule"]) for name, entry in schedule.items()}
    print(f"faultkit beat schedule: {shown}", flush=True)
    app.Beat(loglevel="INFO", schedule=schedule_path, max_interval=interval).run()


@contextmanager
def broker(app, url):
    """Send this process's tasks to `url` (not eagerly) for the duration, then restore."""
    saved = app.conf.broker_url, app.conf.task_always_eager

    def reset_pools():
        # kombu keeps connection and producer pools in process-wide registries: closing only the
        # app's pool leaves closed pools registered ("Acquire on closed pool" in a later test).
        kombu.pools.reset()
        app._pool = None
        app.amqp._producer_pool = None

    reset_pools()
    app.conf.broker_url, app.conf.task_always_eager = url, False
    try:
        yield app
    finally:
        reset_pools()
        app.conf.broker_url, app.conf.task_always_eager = saved


def purge(app, queues=QUEUES):
    with app.connection_for_write() as conn:
        for queue in queues:
            conn.default_channel.queue_purge(queue)


# --- The receiver ---------------------------------------------------------------------------------


class CountingReceiver(LocalServer):
    """An idempotent Standard Webhooks receiver on 127.0.0.1 that counts what it sees.

    requests            every request (verified or not, duplicates included)
    rejected            requests whose signature did not verify (answered 401)
    distinct            webhook-ids processed (each once)
    duplicates_dropped  requests carrying an already processed webhook-id (answered 200 again)
    doubled             posts processed under more than one webhook-id (extra copies)
    """

    PATH = "/hooks/reviewflow"

    def __init__(self, secret=None, delay=0.0, tls=None):
        self.secret = secret
        self.delay = delay  # seconds between processing a delivery and answering it
        self.requests = 0
        self.rejected = 0
        self.duplicates_dropped = 0
        self.processed = {}  # webhook-id -> (number, post id)
        self.posts = Counter()  # post id -> webhook-ids processed for it
        self.first_at = self.last_at = None  # time.time() of the first and last processing
        self.sample_body = b""  # the last verified body, as sent
        self.errors = []
        self._hold = None  # (held, release) events for the next new delivery
        super().__init__(tls)

    @property
    def url(self):
        return self.base_url + self.PATH

    @property
    def distinct(self):
        return len(self.processed)

    @property
    def doubled(self):
        return sum(count - 1 for count in self.posts.values())

    def stop(self):
        self.release_hold()
        super().stop()

    def hold_next(self):
        """Freeze the next new delivery once processed, before answering; returns its Event."""
        held, release = threading.Event(), threading.Event()
        with self._lock:
            self._hold = (held, release)
        return held

    def release_hold(self):
        with self._lock:
            hold, self._hold = self._hold, None
        if hold:
            hold[1].set()

    def reset(self):
        with self._lock:
            self.requests = self.rejected = self.duplicates_dropped = 0
            self.processed.clear()
            self.posts.clear()
            self.first_at = self.last_at = None
            self.errors.clear()

    def _receive(self, body, headers):
        """Verify and process (once per webhook-id); returns (status, answer, hold or None)."""
        from standardwebhooks.webhooks import Webhook, WebhookVerificationError

        webhook_id = headers.get("webhook-id", "")
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except (WebhookVerificationError, ValueError, TypeError) as error:
            with self._lock:
                self.requests += 1
                self.rejected += 1
                if len(self.errors) < 20:
                    self.errors.append(f"{webhook_id}: {error.__class__.__name__}: {error}")
            return 401, {"error": "signature"}, None
        post_id = (payload.get("data") or {}).get("post_id")
        hold = None
        with self._lock:
            self.requests += 1
            self.sample_body = body
            if webhook_id in self.processed:
                self.duplicates_dropped += 1
                number = self.processed[webhook_id][0]
            else:
                number = len(self.processed) + 1
                self.processed[webhook_id] = (number, post_id)
                self.posts[post_id] += 1
                self.last_at = time.time()
                self.first_at = self.first_at or self.last_at
                hold, self._hold = self._hold, None
        return 200, {"id": f"rcv-{number}", "url": f"https://receiver.example/p/{number}"}, hold

    def _handler_class(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer, hold = receiver._receive(body, headers)
                if hold is not None:
                    held, release = hold
                    held.set()
                    release.wait(30)
                elif receiver.delay and status == 200:
                    time.sleep(receiver.delay)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the sender is gone (killed mid-request)

        return Handler


if __name__ == "__main__":
    if sys.argv[1:2] == ["beat"] and len(sys.argv) == 5:
        _run_beat(sys.argv[2], float(sys.argv[3]), [e for e in sys.argv[4].split(",") if e])
    else:
        sys.exit("usage: python -m tests.faultkit beat SCHEDULE_FILE INTERVAL_SECONDS ENTRY,...")
