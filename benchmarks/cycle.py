"""The whole review cycle: create, submit, approve, release and deliver to the sandbox network.

Run by `make bench` (first, on its own freshly recreated database) or alone:
`python -m benchmarks.cycle`. DATABASE_URL names the dedicated database (its name must contain
"bench": it is DROPPED and recreated, as for the queue benchmark).

This process is the one client: it calls the functions the views call:
`workflow.create_post(..., submit=True)`, as the compose form's "Submit for review" button does
(one transaction), then `workflow.decide(outcome="approve", ...)`. For `cycle_posts_per_s` and the
query count Celery runs eagerly in this process, so each approval's release, the delivery to the
sandbox, the settling of the post and the mails happen on commit, here. For the figures marked
"worker", as deployed, a real Celery worker process on Redis (BENCH_BROKER_URL) runs them, and a
run's clock stops when every one of its posts is published.

The world is the tests' `world` fixture, trimmed: an advisor in a team, a reviewer granted on it
and in "Compliance reviewers" (the catch-all rule of migration 0003: a one-step route), and a
validated sandbox account.

Figures, one line each on stdout (progress goes to stderr):
  BENCH cycle_posts_per_s         posts/s through the whole cycle, all in this process, median
                                  of BENCH_CYCLE_RUNS runs of BENCH_CYCLE_POSTS posts
  BENCH cycle_queries_per_post    SQL queries for one post's whole cycle, a warm run (BEGIN and
                                  COMMIT count, as Django's assertNumQueries counts them), in
                                  a burst: its two mails gathered with the burst's (notify)
  BENCH cycle_queries_per_post_alone  the same for a post alone, its two mails sent at once
  BENCH cycle_client_cpu_ms_per_post  CPU time of this process per post, in-process runs
  BENCH cycle_db_cpu_ms_per_post  CPU time of its PostgreSQL server process per post (when
                                  the server runs on this machine): what each post costs the
                                  database every worker shares
  BENCH cycle_db_cpu_growth       that, in the last in-process run over the first (each run adds
                                  BENCH_CYCLE_POSTS posts): 1.0 when a post costs the database
                                  the same however many came before (when the server runs on
                                  this machine and there are two runs or more)
  BENCH cycle_parallel_posts_per_s  posts/s of BENCH_CYCLE_CLIENTS client processes at once
                                  (one per core by default), each as the one above, the
                                  BENCH_CYCLE_POSTS of a run shared out: how the engine scales
                                  with processes (they share the ledger's head and the database)
  BENCH cycle_worker_posts_per_s  the same, with the worker's part in a real worker process
  BENCH cycle_http_posts_per_s    the same cycle through the web views with Django's test client
                                  (login, the form, CSRF enforced, the post page, the decision),
                                  the worker publishing

On stderr, where the cost goes: one post's statements by phase, and this process's CPU time per
post by phase (`PHASES`); and first, how fast the machine is (`machine.orm_milliseconds`).

A run is a burst: its first mails go at once, the rest are gathered (approvals/notify.py), and
the beat's pass that mails what was gathered (`notify.send_gathered`) runs inside the run's
clock, when its posts are published.

Before printing, the run is checked: every post published once (one SandboxPost each), its
ledger entries present, every mail sent, and the chain verifies; otherwise it says what is wrong
and exits 1.

Knobs (environment): BENCH_CYCLE_POSTS (1000), BENCH_CYCLE_RUNS (3), BENCH_CYCLE_HTTP_POSTS (200),
BENCH_CYCLE_CLIENTS (the number of cores), BENCH_BROKER_URL (redis://127.0.0.1:6379/14; purged).
"""

import json
import os
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from . import machine
from .queue import DEFAULT_DATABASE_URL, PhaseClock, bench, log, recreate_database

POSTS = int(os.environ.get("BENCH_CYCLE_POSTS", "1000"))
RUNS = int(os.environ.get("BENCH_CYCLE_RUNS", "3"))
HTTP_POSTS = int(os.environ.get("BENCH_CYCLE_HTTP_POSTS", "200"))
CLIENTS = int(os.environ.get("BENCH_CYCLE_CLIENTS", "0")) or os.cpu_count()
BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/14")
PUBLISHED_TIMEOUT = 300  # seconds the worker may take to publish a run's last posts
PASSWORD = "correct horse battery"
TEXT = "Portes ouvertes samedi à l'agence {n} : nos conseillers vous attendent de 9 h à 17 h."
EVENTS = (
    "post.created",
    "post.submitted",
    "decision.approve",
    "post.approved",
    "post.released",
    "post.published",
)
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
REVISION_HASH = re.compile(r'name="revision_hash" value="([0-9a-f]+)"')


def make_world():
    from django.contrib.auth.models import Group, User
    from guardian.shortcuts import assign_perm

    from approvals.models import Membership, SocialAccount, Team

    team = Team.objects.create(name="Lyon")
    advisor = User.objects.create_user("alice", "alice@example.com", PASSWORD)
    reviewer = User.objects.create_user("rita", "rita@example.com", PASSWORD)
    Membership.objects.create(user=advisor, team=team)
    assign_perm("approvals.review_team", reviewer, team)
    reviewer.groups.add(Group.objects.get(name="Compliance reviewers"))  # migration 0003
    account = SocialAccount.objects.create(
        team=team, network="sandbox", name="Lyon branch", handle="@lyon", validated=True
    )
    # Fresh instances, as a request would load them.
    return User.objects.get(pk=advisor.pk), User.objects.get(pk=reviewer.pk), account


# What each call of a cycle sets off, for the breakdown: with Celery eager, the mails, the
# delivery and the settling run in the call whose commit enqueues them.
PHASES = (
    "create and submit (and the review request's mail)",
    "approve and release (and the delivery, the settling, the decision's mail)",
)


def one_cycle(advisor, reviewer, account, n, after=None):
    """One post through the cycle; `after(phase)`, when given, is called as each call returns."""
    from approvals import workflow

    after = after or (lambda phase: None)
    post = workflow.create_post(
        advisor, text=TEXT.format(n=n), account_ids=[account.pk], submit=True
    )
    after(PHASES[0])
    workflow.decide(
        post.pk, reviewer, outcome="approve", revision_hash=post.current_revision.content_hash
    )
    after(PHASES[1])
    return post.pk


def service_runs(advisor, reviewer, account, label):
    """(the post ids, the median posts/s, CPU ms per post of this process and of its database
    server process over all runs, and that of the database in each run). Logs this process's
    CPU time per post by phase."""
    ids, rates, db_runs = [], [], []
    client_cpu, db_mark = time.process_time(), database_cpu()
    clock = PhaseClock(PHASES)
    for run in range(RUNS):
        started = time.perf_counter()
        clock.start()
        batch = [one_cycle(advisor, reviewer, account, n, clock) for n in range(POSTS)]
        wait_published(batch)
        mail_gathered()
        rate = POSTS / (time.perf_counter() - started)
        ids += batch
        rates.append(rate)
        database = ""
        if db_mark is not None:
            db_now = database_cpu()
            db_runs.append((db_now - db_mark) * 1000 / POSTS)
            db_mark = db_now
            database = f", the database {db_runs[-1]:.1f} ms of CPU a post"
        log(f"  {label} run {run + 1}: {POSTS} posts at {rate:.1f} posts/s{database}")
    client_ms = (time.process_time() - client_cpu) * 1000 / len(ids)
    db_ms = statistics.fmean(db_runs) if db_runs else None
    clock.log(f"  {label}, this process's CPU time per post:", len(ids))
    return ids, statistics.median(rates), client_ms, db_ms, db_runs


def parallel_runs(label):
    """(the post ids, the median posts/s) of CLIENTS processes running cycles at once, each as
    the in-process runs do (`python -m benchmarks.cycle client`), a run's POSTS shared out. A
    run's clock starts at an agreed moment and stops when its slowest client is done."""
    ids, rates = [], []
    for run in range(RUNS):
        start_at = time.time() + 5  # time for every client to start, connect and warm up
        shares = [POSTS // CLIENTS + (n < POSTS % CLIENTS) for n in range(CLIENTS)]
        clients = [
            subprocess.Popen(
                [sys.executable, "-m", "benchmarks.cycle", "client", str(start_at), str(share)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for share in shares
        ]
        results = []
        for client in clients:
            out, _ = client.communicate(timeout=PUBLISHED_TIMEOUT)
            if client.returncode:
                raise SystemExit(f"cycle benchmark: a client exited with {client.returncode}")
            results.append(json.loads(out))
        rate = POSTS / max(result["seconds"] for result in results)
        ids += [post_id for result in results for post_id in result["ids"]]
        rates.append(rate)
        log(f"  {label} run {run + 1}: {POSTS} posts at {rate:.1f} posts/s ({CLIENTS} clients)")
    return ids, statistics.median(rates)


def run_client(start_at, count):
    """One of parallel_runs' clients: a warm cycle, then `count` cycles from `start_at` (epoch
    seconds); prints the ids of its posts and the seconds it took, as JSON."""
    from django.contrib.auth.models import User

    from approvals.models import SocialAccount

    advisor, reviewer = User.objects.get(username="alice"), User.objects.get(username="rita")
    account = SocialAccount.objects.get(network="sandbox")
    ids = [one_cycle(advisor, reviewer, account, 0)]  # warm, as a server's caches are
    time.sleep(max(0.0, start_at - time.time()))
    ids += [one_cycle(advisor, reviewer, account, n) for n in range(count)]
    mail_gathered()
    print(json.dumps({"ids": ids, "seconds": time.time() - start_at}))


def database_cpu():
    """CPU seconds used so far by this connection's PostgreSQL server process, or None where
    it cannot be read (another host, not Linux). Unlike the clock, CPU time does not count the
    time a shared virtual machine's host takes the cores away (steal), so it compares runs."""
    from django.db import connection

    if connection.settings_dict["HOST"] not in ("", "localhost", "127.0.0.1", "::1"):
        return None  # its pid would name some process of this machine
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [pid] = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def mail_gathered():
    """The beat's pass that mails, one mail per person, what the burst gathered."""
    from approvals import notify

    notify.send_gathered()


def wait_mailed(post_ids):
    """Until every mail about these posts is sent (the worker may still be at the last ones)."""
    from approvals.models import Notification

    deadline = time.monotonic() + PUBLISHED_TIMEOUT
    unsent = Notification.objects.filter(post_id__in=post_ids, sent_at=None)
    while unsent.exists() and time.monotonic() < deadline:
        mail_gathered()
        time.sleep(0.01)


def wait_published(post_ids):
    """Until every one of these posts is published (at once when Celery is eager)."""
    from approvals.models import Post
    from approvals.models.posts import State

    deadline = time.monotonic() + PUBLISHED_TIMEOUT
    waiting = Post.objects.filter(pk__in=post_ids).exclude(state=State.PUBLISHED)
    while waiting.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"cycle benchmark: {waiting.count()} posts still not published")
        time.sleep(0.01)


@contextmanager
def real_worker(database_url):
    """A Celery worker process on BENCH_BROKER_URL; this process sends its tasks there."""
    from reviewflow.celery import app
    from tests.faultkit import broker, purge, service_env, worker

    log_path = Path(os.environ.get("REVIEWFLOW_VAR_DIR", "var")) / "bench" / "cycle_worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    env = service_env(
        BROKER_URL,
        database_url,
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    )
    the_worker = worker(
        env, log_path, name="bench", loglevel=os.environ.get("BENCH_WORKER_LOGLEVEL", "warning")
    )
    with broker(app, BROKER_URL):
        purge(app)
        the_worker.start()
        try:
            yield the_worker
        finally:
            the_worker.stop()
            if not the_worker.alive and the_worker.process.returncode not in (0, -15):
                log(the_worker.log_tail(4000))


def count_queries(advisor, reviewer, account, alone=False):
    """(the post, its statements) of one post in a burst, or `alone` (mails sent at once)."""
    from django.conf import settings
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings

    counts = {}
    burst = 0 if alone else settings.REVIEWFLOW["MAIL_BURST_SECONDS"]
    with (
        override_settings(REVIEWFLOW={**settings.REVIEWFLOW, "MAIL_BURST_SECONDS": burst}),
        CaptureQueriesContext(connection) as captured,
    ):
        post_id = one_cycle(
            advisor, reviewer, account, 0, lambda phase: counts.setdefault(phase, len(captured))
        )
    if alone:
        log(f"statements of one post alone (its mails sent at once): {len(captured)}")
        return post_id, len(captured)
    log("statements of one post in a burst, by phase:")
    before = 0
    for phase, total in counts.items():
        log(f"  {total - before:3d}  {phase}")
        before = total
    path = os.environ.get("BENCH_CYCLE_QUERY_LOG")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            for query in captured.captured_queries:
                out.write(query["sql"] + "\n")
        log(f"query log: {path}")
    return post_id, len(captured)


def _token(pattern, html, what):
    match = pattern.search(html)
    if match is None:
        raise SystemExit(f"cycle benchmark: no {what} on the page:\n{html[:2000]}")
    return match.group(1)


def http_runs(advisor, reviewer, account):
    from django.test import Client
    from django.urls import reverse

    author, checker = Client(enforce_csrf_checks=True), Client(enforce_csrf_checks=True)
    assert author.login(username=advisor.username, password=PASSWORD)
    assert checker.login(username=reviewer.username, password=PASSWORD)
    ids = []
    started = time.perf_counter()
    for n in range(HTTP_POSTS):
        form = author.get(reverse("post_create"))
        assert form.status_code == 200, form.status_code
        token = _token(CSRF, form.content.decode(), "CSRF token")
        response = author.post(
            reverse("post_create"),
            {
                "text": TEXT.format(n=n),
                "accounts": [account.pk],
                "submit": "1",  # the form's "Submit for review" button
                "csrfmiddlewaretoken": token,
            },
        )
        assert response.status_code == 302, (response.status_code, response.content[:2000])
        post_id = int(response["Location"].rstrip("/").rsplit("/", 1)[1])
        page = checker.get(reverse("post_detail", args=[post_id]))
        assert page.status_code == 200, page.status_code
        html = page.content.decode()
        response = checker.post(
            reverse("post_decide", args=[post_id]),
            {
                "outcome": "approve",
                "revision_hash": _token(REVISION_HASH, html, "revision hash"),
                "csrfmiddlewaretoken": _token(CSRF, html, "CSRF token"),
            },
        )
        assert response.status_code == 302, (response.status_code, response.content[:2000])
        ids.append(post_id)
    wait_published(ids)
    mail_gathered()
    return ids, HTTP_POSTS / (time.perf_counter() - started)


def check(post_ids):
    """What is wrong with the run, as a list of messages (empty when all is well)."""
    from django.db.models import Count

    from approvals import ledger
    from approvals.models import LedgerEntry, Notification, Post, SandboxPost
    from approvals.models.posts import State

    problems = []
    states = dict(
        Post.objects.filter(pk__in=post_ids).order_by().values_list("state").annotate(n=Count("pk"))
    )
    if states != {State.PUBLISHED: len(post_ids)}:
        problems.append(f"{len(post_ids)} posts should all be published; states: {states}")
    texts = {
        post_id: text
        for post_id, text in Post.objects.filter(pk__in=post_ids).values_list(
            "pk", "current_revision__text"
        )
    }
    sandbox = SandboxPost.objects.count()
    if sandbox != len(post_ids):
        problems.append(f"{sandbox} sandbox posts for {len(post_ids)} posts")
    published = (
        LedgerEntry.objects.filter(post_id__in=post_ids, event="publication.delivered")
        .values("post_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    if published:
        problems.append(f"{published} posts delivered more than once")
    if len(texts) != len(set(post_ids)):
        problems.append("some posts are missing")
    entries = {}
    for post_id, event in LedgerEntry.objects.filter(post_id__in=post_ids).values_list(
        "post_id", "event"
    ):
        entries.setdefault(post_id, []).append(event)
    for event in EVENTS:
        missing = [pk for pk in post_ids if entries.get(pk, []).count(event) != 1]
        if missing:
            problems.append(f"{len(missing)} posts without exactly one {event} ledger entry")
    unsent = Notification.objects.filter(post_id__in=post_ids, sent_at=None).count()
    if unsent:
        problems.append(f"{unsent} mails never sent")
    if (broken := ledger.verify()) is not None:
        problems.append(f"the ledger does not verify: {broken}")
    return problems


def setup():
    """Django on DATABASE_URL, as the cycle runs it: Celery eager, mail to memory."""
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    import logging

    from django.conf import settings

    from reviewflow.celery import app

    app.conf.task_always_eager = True
    # Mail to memory, and no log line per task: stdout carries the BENCH lines only.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    logging.getLogger("celery").setLevel(logging.WARNING)


def main(recreate=True):
    """Run, check and print the figures; return `cycle_posts_per_s`."""
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    if recreate:
        recreate_database(url)
    setup()
    # What machine this run had, on stderr: runs of this benchmark alone are compared with it.
    log(f"machine: {machine.orm_milliseconds(runs=1):.2f} ms to build and compile one query")
    from django.core.management import call_command
    from django.db import connections

    call_command("migrate", verbosity=0)
    advisor, reviewer, account = make_world()
    warm = one_cycle(advisor, reviewer, account, 0)  # warm the caches, as a server's are
    post_id, queries = count_queries(advisor, reviewer, account)
    alone_id, queries_alone = count_queries(advisor, reviewer, account, alone=True)
    eager_ids, rate, client_ms, db_ms, db_runs = service_runs(
        advisor, reviewer, account, "in-process"
    )
    parallel_ids, parallel_rate = parallel_runs("in-process, parallel")
    with real_worker(url):
        worker_ids, worker_rate, *_ = service_runs(advisor, reviewer, account, "client + worker")
        http_ids, http_rate = http_runs(advisor, reviewer, account)
    ids = [warm, post_id, alone_id, *eager_ids, *parallel_ids, *worker_ids, *http_ids]
    wait_mailed(ids)
    problems = check(ids)
    if problems:
        for problem in problems:
            log(f"cycle benchmark: {problem}")
        sys.exit(1)
    bench("cycle_posts_per_s", f"{rate:.1f}", "posts/s")
    bench("cycle_queries_per_post", queries, "queries")
    bench("cycle_queries_per_post_alone", queries_alone, "queries")
    bench("cycle_client_cpu_ms_per_post", f"{client_ms:.1f}", "ms")
    if db_ms is not None:
        bench("cycle_db_cpu_ms_per_post", f"{db_ms:.1f}", "ms")
    if len(db_runs) > 1 and db_runs[0] > 0:
        bench("cycle_db_cpu_growth", f"{db_runs[-1] / db_runs[0]:.2f}", "ratio")
    bench("cycle_parallel_posts_per_s", f"{parallel_rate:.1f}", "posts/s")
    bench("cycle_worker_posts_per_s", f"{worker_rate:.1f}", "posts/s")
    bench("cycle_http_posts_per_s", f"{http_rate:.1f}", "posts/s")
    connections.close_all()  # the next benchmark drops and recreates the database
    return rate


if __name__ == "__main__":
    mode, *args = sys.argv[1:] or ["main"]
    if mode == "main":
        main()
    elif mode == "client":
        setup()
        run_client(float(args[0]), int(args[1]))
    else:
        sys.exit(f"unknown mode {mode!r}")
