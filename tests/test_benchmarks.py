"""The cycle benchmark checks the run it measured before it prints a figure (benchmarks/cycle.py).

Its check is asked about runs made by its own cycle, sound and then broken the ways a fast but
wrong engine would break them; and the benchmark itself runs once, small, on PostgreSQL with a
real worker on Redis, as `make bench` runs it, then the replay of its statements without Django
(benchmarks/floor.py), which checks that every replayed post was published.
"""

import os
import re
import subprocess
import sys
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from django.db import connection, transaction

from approvals import ledger, workflow
from approvals.models import LedgerEntry, Notification, Post, SandboxPost
from benchmarks import cycle


@pytest.fixture
def bench_run(db, django_capture_on_commit_callbacks):
    """Three posts through the benchmark's cycle in its world, the commits' work done (Celery is
    eager in the tests: the mails, the deliveries and the settling)."""
    advisor, reviewer, account = cycle.make_world()
    with django_capture_on_commit_callbacks(execute=True):
        ids = [cycle.one_cycle(advisor, reviewer, account, n) for n in range(3)]
    cycle.mail_gathered()  # as the run ends: the mails its burst gathered
    return SimpleNamespace(ids=ids, advisor=advisor, reviewer=reviewer, account=account)


def test_a_sound_run_passes(bench_run):
    assert cycle.check(bench_run.ids) == []
    assert SandboxPost.objects.count() == 3


def test_a_post_left_in_review_is_reported(bench_run):
    post = workflow.create_post(
        bench_run.advisor, text="Pas encore relu.", account_ids=[bench_run.account.pk]
    )
    workflow.submit(post.pk, bench_run.advisor)

    problems = cycle.check([*bench_run.ids, post.pk])

    assert "4 posts should all be published; states: {'in_review': 1, 'published': 3}" in problems
    assert "3 sandbox posts for 4 posts" in problems
    assert "1 posts without exactly one post.approved ledger entry" in problems


def test_a_post_delivered_twice_is_reported(bench_run):
    first = bench_run.ids[0]
    SandboxPost.objects.create(account=bench_run.account, idempotency_key="again", text="again")
    with transaction.atomic():
        ledger.append("publication.delivered", post=Post.objects.get(pk=first), publication=0)

    problems = cycle.check(bench_run.ids)

    assert "4 sandbox posts for 3 posts" in problems
    assert "1 posts delivered more than once" in problems


def test_a_mail_never_sent_is_reported(bench_run):
    mails = Notification.objects.filter(post_id__in=bench_run.ids)
    assert mails.count() == 6  # the review request to rita and the decision to alice, each
    mails.filter(post_id=bench_run.ids[2]).update(sent_at=None)

    assert cycle.check(bench_run.ids) == ["2 mails never sent"]


def test_a_tampered_ledger_is_reported(bench_run):
    entry = LedgerEntry.objects.filter(post_id=bench_run.ids[1], event="post.approved").get()
    ledger.set_append_only(connection, False)
    try:
        LedgerEntry.objects.filter(pk=entry.pk).update(payload={"rewritten": True})
    finally:
        ledger.set_append_only(connection, True)

    [problem] = cycle.check(bench_run.ids)

    assert problem.startswith("the ledger does not verify:")
    assert f"#{entry.seq}" in problem


@pytest.mark.postgres
@pytest.mark.redis
def test_the_benchmark_prints_its_figures_after_a_sound_run(tmp_path):
    """A small run of `python -m benchmarks.cycle`, in its own database, its worker on Redis."""
    run, figures = _run_benchmark(
        "benchmarks.cycle",
        "reviewflow_bench_pytest",
        BENCH_BROKER_URL=os.environ["CELERY_BROKER_URL"],
        BENCH_CYCLE_POSTS="4",
        BENCH_CYCLE_RUNS="2",
        BENCH_CYCLE_HTTP_POSTS="2",
        BENCH_CYCLE_CLIENTS="2",
        REVIEWFLOW_VAR_DIR=str(tmp_path),
    )
    assert set(figures) == {
        "cycle_posts_per_s",
        "cycle_queries_per_post",
        "cycle_queries_per_post_alone",
        "cycle_client_cpu_ms_per_post",
        "cycle_db_cpu_ms_per_post",
        "cycle_parallel_posts_per_s",
        "cycle_worker_posts_per_s",
        "cycle_http_posts_per_s",
    } | ({"cycle_db_cpu_growth"} & set(figures))
    assert all(float(value) > 0 for value in figures.values())
    # The database's CPU a post, run by run; their ratio is printed unless the first run's is
    # under the clock's tick (/proc counts CPU in hundredths of a second, and these runs are tiny).
    per_run = re.findall(r"in-process run \d: 4 posts at .* the database ([\d.]+) ms", run.stderr)
    assert len(per_run) == 2, run.stderr[-4000:]
    assert ("cycle_db_cpu_growth" in figures) == (float(per_run[0]) > 0)
    # Where the statements go, by phase, adds up to the figure.
    by_phase = re.search(r"one post in a burst, by phase:\n((?:\s+\d+ .*\n)+)", run.stderr)
    counts = [int(line.split()[0]) for line in by_phase.group(1).splitlines()]
    assert len(counts) == len(cycle.PHASES)
    assert sum(counts) == int(figures["cycle_queries_per_post"])
    # The figure, held: a change that adds or saves a statement in the cycle says so here
    # (and in the README's list of the statements).
    assert int(figures["cycle_queries_per_post"]) == 33, run.stderr[-4000:]
    # Alone, its two mails are each claimed and marked sent: two statements each.
    assert int(figures["cycle_queries_per_post_alone"]) == sum(counts) + 4


@pytest.mark.postgres
def test_the_cycles_statements_replayed_alone_publish_every_post():
    """`python -m benchmarks.floor`: the cycle's statements sent again by psycopg alone, each
    post with its own ids; it exits 1 unless every replayed post is published and delivered."""
    run, figures = _run_benchmark(
        "benchmarks.floor", "reviewflow_bench_pytest_floor", BENCH_FLOOR_POSTS="5"
    )

    assert "33 statements of one post" in run.stderr
    assert set(figures) == {
        "cycle_sql_only_posts_per_s",
        "cycle_sql_only_client_cpu_ms_per_post",
    }
    assert all(float(value) > 0 for value in figures.values())


@pytest.mark.postgres
def test_the_beats_sweeps_are_timed_once_caught_up():
    """`python -m benchmarks.beat`: on the queue benchmark's data, every sweep catches up with
    what the data leaves to do (overdue steps, publish times at risk), then is timed; it exits 1
    if a sweep still finds work once caught up."""
    run, figures = _run_benchmark(
        "benchmarks.beat", "reviewflow_bench_pytest_beat", BENCH_POSTS="2000", BENCH_BEAT_RUNS="2"
    )

    assert set(figures) == {"beat_catch_up_s", "beat_sweeps_ms", "beat_slowest_ms"}
    assert float(figures["beat_sweeps_ms"]) >= float(figures["beat_slowest_ms"]) > 0
    escalated = re.search(r"caught up: escalate_overdue_steps, (\d+) done", run.stderr)
    assert int(escalated.group(1)) > 0, run.stderr[-4000:]  # the data leaves some overdue
    assert len(re.findall(r"^\s+[\d.]+ ms  \w", run.stderr, re.MULTILINE)) == 10


def _run_benchmark(module, database, **env):
    """(the finished run, its BENCH figures by name) of `python -m module` on its own database,
    dropped afterwards; the run must have succeeded."""
    url = urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{database}").geturl()
    try:
        run = subprocess.run(
            [sys.executable, "-m", module],
            env={**os.environ, "DATABASE_URL": url, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        _drop_database(url)
    assert run.returncode == 0, run.stderr[-4000:]
    return run, dict(re.findall(r"^BENCH (\w+) ([0-9.]+) ", run.stdout, re.MULTILINE))


def _drop_database(url):
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(url)
    server = {key.lower(): config[key] for key in ("HOST", "PORT", "USER", "PASSWORD")}
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{config["NAME"]}" WITH (FORCE)')
