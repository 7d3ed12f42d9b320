"""The whole review cycle: create, submit, approve, release and deliver to the sandbox network.

Run by `make bench` (first, on its own freshly recreated database) or alone:
`python -m benchmarks.cycle`. DATABASE_URL names the dedicated database (its name must contain
"bench": it is DROPPED and recreated, as for the queue benchmark). Celery runs eagerly in this
process, so each approval's release and the delivery to the sandbox happen on commit, here.

The world is the tests' `world` fixture, trimmed: an advisor in a team, a reviewer granted on it
and in "Compliance reviewers" (the catch-all rule of migration 0003: a one-step route), and a
validated sandbox account. Each post goes through the functions the views call:
`workflow.create_post`, `workflow.submit`, `workflow.decide(outcome="approve", ...)`.

Figures, one line each on stdout (progress goes to stderr):
  BENCH cycle_posts_per_s       posts/s through the whole cycle, median of BENCH_CYCLE_RUNS runs
                                of BENCH_CYCLE_POSTS posts
  BENCH cycle_queries_per_post  SQL queries for one post's whole cycle (a warm run)
  BENCH cycle_http_posts_per_s  the same cycle through the web views with Django's test client
                                (login, the form, CSRF enforced, the post page, the decision)

Before printing, the run is checked: every post published once (one SandboxPost each), its
ledger entries present, and the chain verifies; otherwise it says what is wrong and exits 1.

Knobs (environment): BENCH_CYCLE_POSTS (1000), BENCH_CYCLE_RUNS (3), BENCH_CYCLE_HTTP_POSTS (200).
"""

import os
import re
import statistics
import sys
import time

from .queue import DEFAULT_DATABASE_URL, bench, log, recreate_database

POSTS = int(os.environ.get("BENCH_CYCLE_POSTS", "1000"))
RUNS = int(os.environ.get("BENCH_CYCLE_RUNS", "3"))
HTTP_POSTS = int(os.environ.get("BENCH_CYCLE_HTTP_POSTS", "200"))
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


def one_cycle(advisor, reviewer, account, n):
    from approvals import workflow

    post = workflow.create_post(advisor, text=TEXT.format(n=n), account_ids=[account.pk])
    workflow.submit(post.pk, advisor)
    workflow.decide(
        post.pk, reviewer, outcome="approve", revision_hash=post.current_revision.content_hash
    )
    return post.pk


def service_runs(advisor, reviewer, account):
    ids, rates = [], []
    for run in range(RUNS):
        started = time.perf_counter()
        for n in range(POSTS):
            ids.append(one_cycle(advisor, reviewer, account, n))
        rate = POSTS / (time.perf_counter() - started)
        rates.append(rate)
        log(f"  run {run + 1}: {POSTS} posts at {rate:.1f} posts/s")
    return ids, statistics.median(rates)


def count_queries(advisor, reviewer, account):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        post_id = one_cycle(advisor, reviewer, account, 0)
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
            {"text": TEXT.format(n=n), "accounts": [account.pk], "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302, (response.status_code, response.content[:2000])
        post_id = int(response["Location"].rstrip("/").rsplit("/", 1)[1])
        response = author.post(
            reverse("post_submit", args=[post_id]), {"csrfmiddlewaretoken": token}
        )
        assert response.status_code == 302, (response.status_code, response.content[:2000])
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
    return ids, HTTP_POSTS / (time.perf_counter() - started)


def check(post_ids):
    """What is wrong with the run, as a list of messages (empty when all is well)."""
    from django.db.models import Count

    from approvals import ledger
    from approvals.models import LedgerEntry, Post, SandboxPost
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
    if (broken := ledger.verify()) is not None:
        problems.append(f"the ledger does not verify: {broken}")
    return problems


def main(recreate=True):
    url = os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if recreate:
        recreate_database(url)

    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    import logging

    from django.conf import settings

    from reviewflow.celery import app

    app.conf.task_always_eager = True
    # Mail to memory, and no log line per task: stdout carries the BENCH lines only.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    logging.getLogger("celery").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0)
    advisor, reviewer, account = make_world()
    warm = one_cycle(advisor, reviewer, account, 0)  # warm the caches, as a server's are
    post_id, queries = count_queries(advisor, reviewer, account)
    ids, rate = service_runs(advisor, reviewer, account)
    http_ids, http_rate = http_runs(advisor, reviewer, account)
    problems = check([warm, post_id, *ids, *http_ids])
    if problems:
        for problem in problems:
            log(f"cycle benchmark: {problem}")
        sys.exit(1)
    bench("cycle_posts_per_s", f"{rate:.1f}", "posts/s")
    bench("cycle_queries_per_post", queries, "queries")
    bench("cycle_http_posts_per_s", f"{http_rate:.1f}", "posts/s")
    connections.close_all()  # the next benchmark drops and recreates the database


if __name__ == "__main__":
    main()
