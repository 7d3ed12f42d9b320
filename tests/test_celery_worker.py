"""End to end on real services: PostgreSQL, Redis and a real Celery worker process.

The test process approves a post, which releases it in the same transaction; the delivery task
goes through Redis to a separate worker process, which delivers it to a webhook receiver run by
this test and mails the author.
"""

import os
import re
import time
from contextlib import contextmanager

import pytest
from django.db import connection

from approvals import workflow
from approvals.models import LedgerEntry, Notification, Post, Publication
from approvals.models.posts import State

from .faultkit import database_url, purge, service_env, worker

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

DEADLINE_SECONDS = 60


@contextmanager
def real_worker(tmp_path, name, **env):
    """A real worker process on Redis, which this process's tasks go to (not run eagerly); its
    log is printed when the block fails."""
    from reviewflow.celery import app

    was_eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    the_worker = worker(
        service_env(os.environ["CELERY_BROKER_URL"], database_url(connection), **env),
        tmp_path / "worker.log",
        name=name,
    )
    try:
        purge(app)
        the_worker.start()
        yield the_worker
    except BaseException:
        print("---- celery worker output ----")
        print(the_worker.log_tail())
        raise
    finally:
        app.conf.task_always_eager = was_eager
        the_worker.stop()


def succeeded(the_worker, *tasks, deadline):
    """Whether the worker logged each task's success by the deadline: it logs just after the
    task's commit, so a test that saw the commit may still have to wait for the line."""
    lines = [rf"Task approvals\.tasks\.{task}\[[^\]]+\] succeeded" for task in tasks]
    while time.monotonic() < deadline and not all(
        re.search(line, the_worker.log_tail()) for line in lines
    ):
        time.sleep(0.2)
    return all(re.search(line, the_worker.log_tail()) for line in lines)


def test_a_real_worker_releases_and_delivers_through_redis(
    world, webhook_receiver, hook_account, tmp_path
):
    account = hook_account
    with real_worker(tmp_path, "reviewflow-test") as the_worker:
        post = workflow.create_post(
            world.alice, text="Réunion d'information jeudi, 18 h.", account_ids=[account.pk]
        )
        workflow.submit(post.pk, world.alice)
        workflow.decide(  # commits the release; on commit the delivery task goes to Redis
            post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
        )
        # Released with its approval: once committed, the post is never seen approved.
        assert Post.objects.get(pk=post.pk).state in (State.PUBLISHING, State.PUBLISHED)

        deadline = time.monotonic() + DEADLINE_SECONDS
        state = None
        while time.monotonic() < deadline and the_worker.alive:
            state = Post.objects.get(pk=post.pk).state
            if state != State.PUBLISHING:
                break
            time.sleep(0.2)
        assert the_worker.alive, "the worker exited"
        assert state == State.PUBLISHED

        post = Post.objects.select_related("approved_revision").get(pk=post.pk)
        publication = Publication.objects.get(post=post)
        assert publication.state == Publication.State.DELIVERED
        [request] = webhook_receiver.received
        assert request.verified, request.error
        assert request.webhook_id == publication.idempotency_key
        assert request.payload["data"]["content_hash"] == post.approved_revision.content_hash
        assert webhook_receiver.delivered_ids == [publication.idempotency_key]
        assert publication.external_id == "rcv-1"
        # The mails are their own task, which may still be running when the post is published.
        unsent = Notification.objects.filter(post=post, digest=False, sent_at__isnull=True)
        while unsent.exists() and time.monotonic() < deadline and the_worker.alive:
            time.sleep(0.2)
        assert not unsent.exists(), "the worker did not send the mails"
        assert Notification.objects.filter(post=post, user=world.alice).exists()
        # The delivery and the mail ran in the worker process, not eagerly in this one.
        assert succeeded(the_worker, "deliver_publication", "send_notifications", deadline=deadline)


def test_a_real_worker_writes_the_ledger_export_a_compliance_admin_asked_for(
    world, client, media_root, tmp_path
):
    """The admin's request commits and returns at once; the worker process writes the file
    through Redis; the download is the file the ledger records, and it checks."""
    from django.urls import reverse

    from approvals import ledger
    from approvals.models import LedgerExport

    for n in range(3):
        workflow.create_post(world.alice, text=f"Post {n}", account_ids=[world.lyon_sandbox.pk])
    with real_worker(tmp_path, "reviewflow-export", MEDIA_ROOT=media_root) as the_worker:
        client.force_login(world.carla)
        response = client.post(reverse("admin:approvals_ledgerentry_export"), {})
        assert response.status_code == 302
        export = LedgerExport.objects.get()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline and the_worker.alive:
            export.refresh_from_db()
            if export.state not in ("queued", "writing"):
                break
            time.sleep(0.2)
        assert the_worker.alive, "the worker exited"
        assert export.state == "ready", export.error
        data = b"".join(
            client.get(
                reverse("admin:approvals_ledgerexport_download", args=[export.pk])
            ).streaming_content
        )
        problem, count = ledger.verify_export(data.decode().splitlines(keepends=True))
        assert (problem, count) == (None, export.entries)
        assert count == LedgerEntry.objects.exclude(event="ledger.export_downloaded").count()
        assert succeeded(the_worker, "export_ledger", deadline=deadline)  # not in this process


def test_a_burst_is_mailed_by_the_beat_through_a_real_worker(world, tmp_path):
    """A campaign of three posts: the first review requests go at once through the worker; the
    rest wait for the beat, whose pass the worker runs, one mail per reviewer."""
    from .faultkit import beat

    the_beat = beat(  # the project's entry, every second rather than every period
        service_env(os.environ["CELERY_BROKER_URL"], database_url(connection)),
        tmp_path / "beat.log",
        tmp_path / "beat-schedule",
        interval=1.0,
        entries=("send-gathered-notifications",),
    )
    with real_worker(tmp_path, "reviewflow-burst") as the_worker:
        posts = [
            workflow.create_post(
                world.alice, text=text, account_ids=[world.lyon_sandbox.pk], submit=True
            )
            for text in ("Livret A: 3% net.", "PEL: 2%.", "Assurance vie: 2,5%.")
        ]
        rows = Notification.objects.filter(post__in=posts)
        # Written within a period (this process's, 60 s): the first pair immediate, the rest
        # gathered.
        assert sorted(rows.filter(gathered=False).values_list("post_id", flat=True)) == [
            posts[0].pk,
            posts[0].pk,
        ]
        assert rows.filter(gathered=True).count() == 4
        deadline = time.monotonic() + DEADLINE_SECONDS
        assert succeeded(the_worker, "send_notifications", deadline=deadline)
        assert not rows.filter(gathered=True).exclude(sent_at=None).exists()  # no beat yet

        the_beat.start()
        try:
            while rows.filter(sent_at=None).exists() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            the_beat.stop()
        assert not rows.filter(sent_at=None).exists(), the_beat.log_tail()
        assert succeeded(the_worker, "send_gathered_notifications", deadline=deadline)
        # One mail per reviewer for the two gathered review requests (console backend).
        log = the_worker.log_tail(20000)
        assert log.count("Subject: ReviewFlow: 2 notifications") == 2, log


def _server_processes_of(application_name):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
        )
        return {pid for (pid,) in cursor.fetchall()}


def test_a_real_worker_keeps_its_database_connection_from_one_task_to_the_next(
    world, webhook_receiver, hook_account, tmp_path
):
    """As a web process keeps one between requests: Celery's Django fix-up would open one for
    every task, which halved the release's throughput (benchmarks/release.py)."""

    def published(count):
        posts = []
        for n in range(count):
            post = workflow.create_post(
                world.alice, text=f"Permanence {n} mardi.", account_ids=[hook_account.pk]
            )
            workflow.submit(post.pk, world.alice)
            workflow.decide(
                post.pk,
                world.rita,
                outcome="approve",
                revision_hash=post.current_revision.content_hash,
            )
            posts.append(post.pk)
        deadline = time.monotonic() + DEADLINE_SECONDS
        waiting = Post.objects.filter(pk__in=posts).exclude(state=State.PUBLISHED)
        while waiting.exists() and time.monotonic() < deadline and the_worker.alive:
            time.sleep(0.2)
        assert not waiting.exists(), "the worker did not publish the posts"

    name = "reviewflow-test-worker"  # the worker's sessions, told from any other
    url = f"{database_url(connection)}?application_name={name}"
    with real_worker(tmp_path, "reviewflow-test", DATABASE_URL=url) as the_worker:
        published(1)
        after_one = _server_processes_of(name)
        published(3)  # three deliveries, and mails
        after_more = _server_processes_of(name)
    assert len(after_one) == 1, after_one
    assert after_more == after_one


def test_a_task_that_failed_in_a_worker_leaves_no_connection_for_the_next():
    """Its connection may be unusable in a way Django cannot see (celery#9824); one that
    succeeded is kept."""
    from celery import signals

    from approvals.tasks import deliver_publication

    for state, kept in (("SUCCESS", True), ("FAILURE", False)):
        connection.ensure_connection()
        signals.task_postrun.send(
            sender=deliver_publication, task=deliver_publication, task_id="t", state=state
        )
        assert (connection.connection is not None) is kept
