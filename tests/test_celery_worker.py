"""End to end on real services: PostgreSQL, Redis and a real Celery worker process.

The test process approves a post; the release task goes through Redis to a separate worker
process, which releases the post and delivers it to a webhook receiver run by this test.
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from approvals import workflow
from approvals.models import Post, Publication
from approvals.models.posts import State

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

ROOT = Path(__file__).resolve().parent.parent
QUEUES = ("default", "publishing", "maintenance", "notifications")
DEADLINE_SECONDS = 60


def database_url():
    """The URL of the database this test uses (the test database, not the configured one)."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "127.0.0.1"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{quote(db['NAME'], safe='')}"


def purge_queues(app):
    """Drop messages left in our queues by earlier runs (only these keys, not the whole db)."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            channel.queue_purge(queue)


def start_worker(log):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [
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
            "info",
            "-n",
            f"reviewflow-test-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_worker(worker):
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


def test_a_real_worker_releases_and_delivers_through_redis(world, webhook_receiver, hook_account):
    from reviewflow.celery import app

    account = hook_account

    was_eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    log = tempfile.TemporaryFile(mode="w+")
    worker = None
    passed = False
    try:
        purge_queues(app)
        worker = start_worker(log)

        post = workflow.create_post(
            world.alice, text="Réunion d'information jeudi, 18 h.", account_ids=[account.pk]
        )
        workflow.submit(post.pk, world.alice)
        workflow.decide(  # commits; on commit the release task goes to Redis
            post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
        )

        deadline = time.monotonic() + DEADLINE_SECONDS
        state = None
        while time.monotonic() < deadline and worker.poll() is None:
            state = Post.objects.get(pk=post.pk).state
            if state not in (State.APPROVED, State.PUBLISHING):
                break
            time.sleep(0.2)
        assert worker.poll() is None, "the worker exited"
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
        # Both steps ran in the worker process, not eagerly in this one.
        log.seek(0)
        output = log.read()
        for task in ("release_post", "deliver_publication"):
            assert re.search(rf"Task approvals\.tasks\.{task}\[[^\]]+\] succeeded", output)
        passed = True
    finally:
        app.conf.task_always_eager = was_eager
        if worker is not None:
            stop_worker(worker)
        if not passed:
            log.seek(0)
            print("---- celery worker output ----")
            print(log.read()[-20000:])
        log.close()
