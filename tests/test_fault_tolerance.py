"""Exactly-once delivery under faults, on PostgreSQL and Redis with a real worker and beat.

1,000 approved posts are released to a local webhook receiver by a real Celery worker (one
process) and beat, on a private redis-server started by this test (never the machine's shared
Redis). While they are delivered, the worker is killed with SIGKILL and restarted twice (the
first time while a request is at the receiver: processed there, not yet answered) and Redis is
killed and started again, empty, once: every message it held is lost, and the outbox in the
database must bring them back.

The webhook guarantee is at-least-once with a stable webhook-id: a worker killed mid-request
cannot know whether the receiver got the post, so it sends it again with the same id, and the
receiver (an idempotent one, as Standard Webhooks asks) drops the repeat. So: every post arrives
(distinct webhook-ids = posts), none is lost, none is processed twice (no post under two ids),
and the test prints how many repeats the receiver dropped. On our side, every post ends published
and each delivery is recorded once (one publication.delivered ledger entry per post).

The second worker kill lands wherever the worker is (claiming, sending, recording a delivery,
settling the post), so different runs exercise different windows.

Knobs: REVIEWFLOW_FAULT_POSTS (1000) for development runs with fewer posts.
"""

import os
import shutil
import time

import pytest
from django.db import connection
from django.db.models import Count

from approvals import workflow
from approvals.models import LedgerEntry, Post, Publication
from approvals.models.posts import State
from tests.conftest import REQUIRE_SERVICES, webhook_account
from tests.faultkit import (
    CountingReceiver,
    RedisServer,
    beat,
    broker,
    database_url,
    service_env,
    wait_until,
    worker,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

POSTS = int(os.environ.get("REVIEWFLOW_FAULT_POSTS", "1000"))
DELIVERY_DEADLINE = 180  # seconds from the worker's start to the last post published
BEAT_INTERVAL = 2.0  # the delivery sweeps (release due posts, outbox, stalled) this often
# Short timings for the worker and beat (production keeps its own defaults).
TIMINGS = {
    "CELERY_VISIBILITY_TIMEOUT": 15,
    "REVIEWFLOW_DELIVERY_LEASE_SECONDS": 10,
    "REVIEWFLOW_DELIVERY_BACKOFF_SECONDS": 1,
    # The outbox sweep and the stalled sweep every BEAT_INTERVAL; a message lost with Redis is
    # sent again once it is this old.
    "REVIEWFLOW_DELIVERY_BEAT_SECONDS": 2,
    "REVIEWFLOW_RECOVER_STALLED_BEAT_SECONDS": 2,
    "REVIEWFLOW_DELIVERY_RESEND_SECONDS": 15,
    # Countdowns stay below the visibility timeout (NOTES: Redis redelivers them otherwise).
    "REVIEWFLOW_DELIVERY_COUNTDOWN_MAX_SECONDS": 10,
    "REVIEWFLOW_ALLOW_PRIVATE_NETWORKS": 1,
}
TEXT = "Portes ouvertes samedi à l'agence {n} : nos conseillers vous attendent de 9 h à 17 h."


def approve_posts(world, account, count):
    """`count` posts through the workflow, each approved and so released in the same transaction;
    its delivery goes out on commit."""
    ids = []
    for n in range(count):
        post = workflow.create_post(world.alice, text=TEXT.format(n=n), account_ids=[account.pk])
        workflow.submit(post.pk, world.alice)
        workflow.decide(
            post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
        )
        ids.append(post.pk)
    return ids


def test_every_post_arrives_exactly_once_through_worker_kills_and_a_redis_restart(
    world, tmp_path, settings
):
    if not shutil.which("redis-server"):
        if REQUIRE_SERVICES:
            pytest.fail("REVIEWFLOW_REQUIRE_SERVICES=1 but there is no redis-server binary")
        pytest.skip("no redis-server binary to start a private Redis")
    from reviewflow.celery import app

    # The receiver is on loopback: allowed here as in the worker (TIMINGS).
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": True}
    started = time.monotonic()
    passed = False
    with CountingReceiver(delay=0.01) as receiver, RedisServer(tmp_path / "redis") as redis:
        account = webhook_account(world, receiver)

        env = service_env(redis.url(), database_url(connection), **TIMINGS)
        the_worker = worker(env, tmp_path / "worker.log", name="fault")
        the_beat = beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule", BEAT_INTERVAL)
        faults = []
        try:
            # Approvals (and releases) commit here; each delivery task waits in the private Redis.
            with broker(app, redis.url()):
                post_ids = approve_posts(world, account, POSTS)
            setup_seconds = time.monotonic() - started
            print(f"\nFAULT setup: {POSTS} posts approved in {setup_seconds:.1f} s")

            delivering = time.monotonic()
            the_worker.start()
            the_beat.start()

            def published():
                return Post.objects.filter(pk__in=post_ids, state=State.PUBLISHED).count()

            def reached(fraction):
                """Wait until this share of the posts reached the receiver; fail fast if a post
                failed or the worker died."""
                deadline = time.monotonic() + DELIVERY_DEADLINE
                while receiver.distinct < POSTS * fraction:
                    assert the_worker.alive, "the worker exited"
                    assert time.monotonic() < deadline, f"{receiver.distinct} delivered by now"
                    failed = Post.objects.filter(pk__in=post_ids, state=State.FAILED)
                    assert not failed.exists(), Publication.objects.filter(
                        post__in=failed
                    ).values_list("error", flat=True)[:5]
                    wait_until(lambda: receiver.distinct >= POSTS * fraction, 1, 0.02)

            # 1. Kill the worker while a delivery is at the receiver: processed, not answered.
            reached(0.15)
            held = receiver.hold_next()
            assert held.wait(30), "no delivery reached the receiver to hold"
            the_worker.kill()
            receiver.release_hold()
            faults.append(f"worker SIGKILL mid-request at {receiver.distinct} delivered")
            the_worker.start()

            # 2. Kill Redis and start it again, empty: the queued tasks are lost.
            reached(0.40)
            redis.restart()
            faults.append(f"redis restart at {receiver.distinct} delivered")

            # 3. Kill the worker again, wherever it is.
            reached(0.65)
            the_worker.kill()
            faults.append(f"worker SIGKILL at {receiver.distinct} delivered")
            the_worker.start()

            done = wait_until(
                lambda: (
                    published() == POSTS
                    or Post.objects.filter(pk__in=post_ids, state=State.FAILED).exists()
                ),
                DELIVERY_DEADLINE - (time.monotonic() - delivering),
                0.5,
            )
            delivery_seconds = time.monotonic() - delivering
            last_arrival = (receiver.last_at or time.time()) - (time.time() - delivery_seconds)
            states = dict(
                Post.objects.filter(pk__in=post_ids)
                .order_by()
                .values_list("state")
                .annotate(n=Count("pk"))
            )
            publications = Publication.objects.filter(post_id__in=post_ids)
            keys = set(publications.values_list("idempotency_key", flat=True))
            delivered_entries = LedgerEntry.objects.filter(
                event="publication.delivered", post_id__in=post_ids
            ).count()
            seconds = time.monotonic() - started
            print("FAULT faults:", "; ".join(faults))
            print(
                f"FAULT requests={receiver.requests} distinct={receiver.distinct} "
                f"duplicates_dropped={receiver.duplicates_dropped} doubled={receiver.doubled} "
                f"rejected={receiver.rejected} post_states={states} "
                f"ledger_delivered={delivered_entries} last_arrival_s={last_arrival:.1f} "
                f"delivery_seconds={delivery_seconds:.1f}"
            )
            print(
                f"FAULT posts={states.get(State.PUBLISHED, 0)} "
                f"delivered_distinct={receiver.distinct} "
                f"duplicates_dropped={receiver.duplicates_dropped} "
                f"lost={POSTS - receiver.distinct} doubled={receiver.doubled} "
                f"worker_kills={the_worker.kills} redis_restarts={redis.restarts} "
                f"seconds={seconds:.0f}"
            )
            stuck = list(
                publications.exclude(post__state=State.PUBLISHED).values_list(
                    "post_id", "post__state", "state", "attempts", "lost_claims", "error"
                )[:10]
            )
            assert done, f"not all published in {DELIVERY_DEADLINE} s: {states}; {stuck}"
            assert states == {State.PUBLISHED: POSTS}
            assert receiver.rejected == 0, receiver.errors
            assert receiver.distinct == POSTS  # every post arrived: none lost
            assert receiver.doubled == 0  # no post processed twice (under another webhook-id)
            assert set(receiver.posts) == set(post_ids)
            assert set(receiver.processed) == keys and len(keys) == POSTS
            assert publications.filter(state=Publication.State.DELIVERED).count() == POSTS
            assert delivered_entries == POSTS  # and each delivery recorded once
            assert the_worker.kills == 2 and redis.restarts == 1
            passed = True
        finally:
            receiver.release_hold()
            the_beat.stop()
            the_worker.stop()
            if not passed:
                print("---- worker log ----\n" + the_worker.log_tail())
                print("---- beat log ----\n" + the_beat.log_tail(5000))
