"""The delivery engine: outbox, beat, retries and backoff, rate limits, sweeper, partial success,
scheduling and approval expiry. Tasks run eagerly; on-commit callbacks run only when a test says
so (a callback not run is a message lost with the broker).

The last approval of a post with no publish time, or one already passed, releases it in its own
transaction; what waits for the commit is the delivery. A post whose publish time is to come stays
approved until the beat (`release_due_posts`) releases it."""

import os
import random
import threading
import uuid
from types import SimpleNamespace

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from approvals import publishing, ratelimit, workflow
from approvals.connectors import DeliveryError, ReleasedContent, get_connector
from approvals.connectors.sandbox import SandboxConnector
from approvals.models import (
    AccountCredential,
    ApprovalRule,
    DeliveryAttempt,
    LedgerEntry,
    Notification,
    Post,
    Publication,
    SandboxPost,
)
from approvals.models.posts import State
from approvals.tasks import (
    deliver_due_publications,
    deliver_publication,
    release_due_posts,
    warn_expiring_approvals,
)

from .conftest import at_once, enqueued_deliveries, released_with_approval, through_review

pytestmark = pytest.mark.django_db

TEXT = "Portes ouvertes samedi : taux < 3 %, sans frais."
P = Publication.State
SECOND = timezone.timedelta(seconds=1)


def cfg(settings, **changes):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, **changes}


def approve(world, accounts, callbacks, *, publish_at=None, execute=False):
    """alice drafts and submits, rita approves. Without a publish time, or with one passed, the
    approval releases the post; its deliveries (on commit) run only if `execute`."""
    return through_review(world, callbacks, accounts, TEXT, publish_at=publish_at, execute=execute)


def publish_time_comes(post):
    """The clock reaches the publish time of an approved post (its outbox is due then too)."""
    now = timezone.now()
    Post.objects.filter(pk=post.pk).update(publish_at=now)
    Publication.objects.filter(post=post, state=P.PENDING).update(next_attempt_at=now)


def release(post, callbacks, execute=False):
    """The beat releases the post, whose publish time has come; returns (post, its callbacks)."""
    assert workflow.due_post_ids() == [post.pk]
    with callbacks(execute=execute) as sent:
        release_due_posts.apply()
    post.refresh_from_db()
    return post, sent


def released(world, account, callbacks):
    """A post released to one account by its approval, whose delivery message was not sent (or
    was lost)."""
    post = approve(world, [account], callbacks)
    assert post.state == State.PUBLISHING
    return post, Publication.objects.get(post=post)


@pytest.fixture
def sandbox_calls(monkeypatch):
    """Count the sandbox's real publishes; `fail_with` makes the next ones raise instead."""
    calls = SimpleNamespace(publish=0, error=None)
    original = SandboxConnector.publish

    def publish(self, account, content, key):
        calls.publish += 1
        if calls.error is not None:
            raise calls.error
        return original(self, account, content, key)

    monkeypatch.setattr(SandboxConnector, "publish", publish)
    return calls


# --- Outbox ---------------------------------------------------------------------------------------


def test_the_approval_writes_the_outbox(world, hook_account, django_capture_on_commit_callbacks):
    publish_at = (timezone.now() + timezone.timedelta(days=2)).replace(microsecond=0)
    post = approve(
        world,
        [world.lyon_sandbox, hook_account],
        django_capture_on_commit_callbacks,
        publish_at=publish_at,
    )

    assert post.state == State.APPROVED
    publications = list(Publication.objects.filter(post=post).order_by("pk"))
    assert {p.account_id for p in publications} == {world.lyon_sandbox.pk, hook_account.pk}
    for publication in publications:
        assert publication.state == P.PENDING and publication.attempts == 0
        assert publication.revision_id == post.approved_revision_id
        assert publication.next_attempt_at == publish_at
        assert publication.enqueued_at is None
    approved = LedgerEntry.objects.get(event="post.approved", post_id=post.pk)
    assert approved.payload["publications"] == [p.pk for p in publications]
    # Nothing leaves before the release, whatever message arrives.
    later = publish_at + timezone.timedelta(hours=1)
    assert publishing.enqueue_due(now=later) == ([], [])
    assert publishing.deliver(publications[0].pk, now=later) is False
    assert Publication.objects.filter(state=P.PENDING).count() == 2


def test_no_outbox_when_the_approval_rolls_back(
    world, in_review, django_capture_on_commit_callbacks
):
    with (
        django_capture_on_commit_callbacks(execute=False) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        workflow.decide(
            in_review.pk,
            world.rita,
            outcome="approve",
            revision_hash=in_review.current_revision.content_hash,
        )
        # Approved, its outbox written and released, all in the same transaction.
        assert Publication.objects.filter(post=in_review).count() == 1
        assert Post.objects.get(pk=in_review.pk).state == State.PUBLISHING
        released_with_approval(in_review)
        raise RuntimeError("the commit fails")
    assert not Publication.objects.exists()
    assert Post.objects.get(pk=in_review.pk).state == State.IN_REVIEW
    assert not LedgerEntry.objects.filter(
        post_id=in_review.pk, event__in=["post.approved", "post.released"]
    ).exists()
    assert callbacks == []  # nothing is sent for a transaction that did not commit


@pytest.mark.parametrize("scheduled", [False, True], ids=["as soon as possible", "scheduled"])
def test_an_exempt_route_writes_the_outbox_too(
    world, draft, django_capture_on_commit_callbacks, scheduled
):
    ApprovalRule.objects.create(
        name="Pre-approved template", description="Why.", priority=10, requires_review=False
    )
    if scheduled:
        publish_at = (timezone.now() + timezone.timedelta(days=2)).replace(microsecond=0)
        edit(draft, world.alice, publish_at=publish_at)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post = workflow.submit(draft.pk, world.alice)

    [publication] = Publication.objects.filter(post=post)
    assert publication.state == P.PENDING and publication.account == world.lyon_sandbox
    assert publication.revision_id == post.approved_revision_id == post.current_revision_id
    if scheduled:  # approved at once, released by the beat at its publish time
        assert post.state == State.APPROVED
        assert publication.next_attempt_at == publish_at and publication.enqueued_at is None
        assert enqueued_deliveries(callbacks) == []
    else:  # approved and released at once, in the submission's transaction
        assert post.state == State.PUBLISHING
        assert publication.enqueued_at is not None
        approved, _ = released_with_approval(post)
        assert approved.payload["exempted_by"] == "Pre-approved template"
        assert enqueued_deliveries(callbacks) == [publication.pk]


@pytest.mark.parametrize(
    "scheduled", [False, True], ids=["released by the approval", "released by the beat"]
)
def test_a_lost_message_is_sent_again_by_the_beat(
    world, django_capture_on_commit_callbacks, settings, scheduled
):
    publish_at = timezone.now() + timezone.timedelta(days=1) if scheduled else None
    with django_capture_on_commit_callbacks(execute=False) as lost:
        post = approve(
            world, [world.lyon_sandbox], django_capture_on_commit_callbacks, publish_at=publish_at
        )
    publication = Publication.objects.get(post=post)
    if scheduled:
        assert post.state == State.APPROVED and enqueued_deliveries(lost) == []
        # Its time comes: the beat releases the post; the delivery message is lost.
        publish_time_comes(post)
        post, lost = release(post, django_capture_on_commit_callbacks)
    # The delivery message of the release was lost with the broker.
    assert enqueued_deliveries(lost) == [publication.pk]
    publication.refresh_from_db()
    assert post.state == State.PUBLISHING and publication.enqueued_at is not None
    assert publication.state == P.PENDING and SandboxPost.objects.count() == 0

    now = timezone.now()
    assert publishing.enqueue_due(now=now) == ([], [])  # sent recently: maybe still queued
    later = now + timezone.timedelta(seconds=settings.REVIEWFLOW["DELIVERY_RESEND_SECONDS"] + 1)
    assert publishing.enqueue_due(now=later) == ([publication.pk], [])  # eager: delivers

    publication.refresh_from_db()
    post.refresh_from_db()
    assert publication.state == P.DELIVERED and post.state == State.PUBLISHED
    # The late original message, or a second resend, finds nothing to do.
    deliver_publication.apply(args=[publication.pk])
    deliver_due_publications.apply()
    assert SandboxPost.objects.count() == 1 and publication.attempts == 1


# --- Retries --------------------------------------------------------------------------------------


def test_backoff_doubles_with_full_jitter_up_to_a_cap(settings):
    cfg(settings, DELIVERY_BACKOFF_SECONDS=30, DELIVERY_BACKOFF_MAX_SECONDS=600)
    low = SimpleNamespace(uniform=lambda a, b: a)
    high = SimpleNamespace(uniform=lambda a, b: b)
    full = [30, 60, 120, 240, 480, 600, 600]
    assert [publishing.backoff_seconds(n, rng=high) for n in range(1, 8)] == full
    assert [publishing.backoff_seconds(n, rng=low) for n in range(1, 8)] == [w / 2 for w in full]
    rng = random.Random(7)
    waits = [publishing.backoff_seconds(3, rng=rng) for _ in range(200)]
    assert all(60 <= wait <= 120 for wait in waits) and len(set(waits)) > 100  # jittered
    # Retry-After wins when longer, never when shorter.
    assert publishing.backoff_seconds(1, retry_after=900, rng=high) == 900
    assert publishing.backoff_seconds(3, retry_after=10, rng=high) == 120


def test_a_retryable_error_waits_for_the_backoff(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, settings, client
):
    cfg(settings, DELIVERY_BACKOFF_SECONDS=30, DELIVERY_COUNTDOWN_MAX_SECONDS=50)
    webhook_receiver.fail(503, times=1)
    post, publication = released(world, hook_account, django_capture_on_commit_callbacks)

    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert publishing.deliver(publication.pk) is False
    after = timezone.now()

    publication.refresh_from_db()
    assert publication.state == P.PENDING and publication.attempts == 1
    assert "HTTP 503" in publication.error
    assert before + 15 * SECOND <= publication.next_attempt_at <= after + 30 * SECOND
    assert len(sent) == 1 and publication.enqueued_at is not None  # a short Celery countdown
    [attempt] = DeliveryAttempt.objects.filter(publication=publication)
    assert not attempt.ok and "HTTP 503" in attempt.detail
    assert not LedgerEntry.objects.filter(event__startswith="publication.").exists()
    post.refresh_from_db()
    assert post.state == State.PUBLISHING

    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Try 2 of 6 at" in page and "last try:" in page and "HTTP 503" in page

    assert publishing.deliver(publication.pk) is False  # an early message: not due yet
    assert publishing.deliver(publication.pk, now=publication.next_attempt_at + SECOND) is True
    publication.refresh_from_db()
    assert publication.state == P.DELIVERED and publication.attempts == 2
    assert [r.status for r in webhook_receiver.received] == [503, 200]
    assert {r.webhook_id for r in webhook_receiver.received} == {publication.idempotency_key}


def test_retry_after_is_honoured_through_the_beat(
    world, sandbox_calls, django_capture_on_commit_callbacks, settings
):
    cfg(settings, DELIVERY_BACKOFF_SECONDS=30)
    sandbox_calls.error = DeliveryError(
        "sandbox rate limit reached; it asks to wait 600 s", retry_after=600
    )
    _, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)

    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert publishing.deliver(publication.pk, now=now) is False
    publication.refresh_from_db()
    assert publication.next_attempt_at == now + 600 * SECOND
    # Too long for a countdown: no message now, the beat sends one when it is due.
    assert sent == [] and publication.enqueued_at is None
    assert publishing.enqueue_due(now=now + 599 * SECOND) == ([], [])
    assert publishing.enqueue_due(now=now + 601 * SECOND)[0] == [publication.pk]

    sandbox_calls.error = None
    assert publishing.deliver(publication.pk, now=now + 601 * SECOND) is True
    assert sandbox_calls.publish == 2


def test_max_attempts_then_failed_with_the_networks_reason(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, settings, client
):
    cfg(settings, DELIVERY_BACKOFF_SECONDS=0, DELIVERY_MAX_ATTEMPTS=3)
    webhook_receiver.always(500)
    post, publication = released(world, hook_account, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=True):
        publishing.enqueue_deliveries([publication.pk])  # eager: each retry is due at once

    publication.refresh_from_db()
    post.refresh_from_db()
    assert len(webhook_receiver.received) == 3
    assert publication.state == P.FAILED and post.state == State.FAILED
    assert publication.error.startswith("the receiver had a temporary problem (HTTP 500")
    assert publication.error.endswith("(gave up after 3 attempts)")
    assert DeliveryAttempt.objects.filter(publication=publication, ok=False).count() == 3
    [failed] = LedgerEntry.objects.filter(event="publication.failed")
    assert failed.payload["error"] == publication.error and failed.payload["attempts"] == 3
    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "gave up after 3 attempts" in page and "Retry publishing" in page


def test_a_refused_token_fails_at_once_and_marks_the_account_for_reconnection(
    world, sandbox_calls, django_capture_on_commit_callbacks
):
    credential = AccountCredential.objects.create(
        account=world.lyon_sandbox, access_token_encrypted="x", status="ok"
    )
    sandbox_calls.error = DeliveryError(
        "sandbox refused the access token (expired or revoked): reconnect the account.",
        reconnect=True,
    )
    post, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)

    with django_capture_on_commit_callbacks(execute=False):
        assert publishing.deliver(publication.pk) is False

    publication.refresh_from_db()
    credential.refresh_from_db()
    assert publication.state == P.FAILED and publication.attempts == 1
    assert credential.status == AccountCredential.Status.RECONNECT
    assert "reconnect the account" in credential.status_detail
    changed = LedgerEntry.objects.get(event="credential.status_changed")
    assert changed.payload["after"] == "reconnect" and changed.payload["via"] == "delivery"
    assert Post.objects.get(pk=post.pk).state == State.FAILED
    # Accounts without a credential (sandbox, webhook) are left alone.
    with transaction.atomic():
        publishing._needs_reconnect(world.paris_sandbox.pk, "refused", timezone.now())


# --- Rate limits ----------------------------------------------------------------------------------


def test_rates_are_parsed():
    assert ratelimit.Rate.parse("50/15m") == ratelimit.Rate(50, 50 / 900)
    assert ratelimit.Rate.parse("100/1m") == ratelimit.Rate(100, 100 / 60)
    assert ratelimit.Rate.parse("5/s") == ratelimit.Rate(5, 5.0)
    for bad in ("0/1m", "ten/1m", "5/0m", "5 per minute"):
        with pytest.raises(ValueError):
            ratelimit.Rate.parse(bad)


def redis_url():
    return os.environ.get("REVIEWFLOW_REDIS_URL") or os.environ.get("CELERY_BROKER_URL", "")


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.redis)])
def buckets(request, settings):
    """Rate limits kept in this process, or in the real Redis (keys unique to this test)."""
    prefix = f"reviewflow-test:{uuid.uuid4().hex}:"
    url = redis_url() if request.param == "redis" else ""
    cfg(
        settings,
        REDIS_URL=url,
        RATE_LIMIT_KEY_PREFIX=prefix,
        RATE_LIMITS={"sandbox": "2/1m", "default": None},
    )
    ratelimit.reset()
    yield SimpleNamespace(backend=request.param, url=url, prefix=prefix)
    if url:
        client = ratelimit._redis_bucket(url).client
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    ratelimit.reset()


def test_a_token_bucket_per_network(buckets):
    assert ratelimit.acquire("sandbox", now=1000.0) == 0
    assert ratelimit.acquire("sandbox", now=1000.0) == 0
    assert ratelimit.acquire("sandbox", now=1000.0) == pytest.approx(30)  # 2 a minute
    assert ratelimit.acquire("sandbox", now=1020.0) == pytest.approx(10)  # took nothing
    assert ratelimit.acquire("sandbox", now=1030.0) == 0
    assert ratelimit.acquire("webhook", now=1000.0) == 0  # no limit for it
    assert all(ratelimit.acquire("webhook", now=1000.0) == 0 for _ in range(50))


@pytest.mark.redis
@pytest.mark.parametrize("buckets", ["redis"], indirect=True)
def test_workers_share_the_bucket_in_redis(buckets):
    """Separate connections (as separate workers would hold), on Redis's clock, 16 at once."""
    rate = ratelimit.Rate.parse("10/1h")
    key = f"{buckets.prefix}x"
    workers = [ratelimit.RedisBucket(buckets.url) for _ in range(4)]
    results, barrier = [], threading.Barrier(16)

    def work(n):
        barrier.wait(timeout=10)
        for _ in range(3):
            results.append(workers[n % 4].take(key, rate))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 48
    assert results.count(0.0) == 10  # exactly the burst, whatever the interleaving
    assert all(wait > 300 for wait in results if wait)  # then one every 6 minutes


def test_without_redis_the_limit_is_kept_in_process(settings):
    cfg(
        settings,
        REDIS_URL="redis://127.0.0.1:9/0",  # nothing listens: Redis down or restarting
        RATE_LIMIT_KEY_PREFIX=f"reviewflow-test:{uuid.uuid4().hex}:",
        RATE_LIMITS={"x": "1/15m"},
    )
    ratelimit.reset()
    assert ratelimit.acquire("x") == 0
    assert 890 < ratelimit.acquire("x") <= 900


def test_no_token_puts_the_publication_back_without_counting_an_attempt(
    world, buckets, sandbox_calls, django_capture_on_commit_callbacks, settings
):
    cfg(settings, RATE_LIMITS={"sandbox": "1/1h"})
    _, first = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)
    post, second = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)

    assert publishing.deliver(first.pk) is True
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert publishing.deliver(second.pk) is False

    second.refresh_from_db()
    assert second.state == P.PENDING and second.attempts == 0 and second.error == ""
    assert before + 3590 * SECOND <= second.next_attempt_at <= timezone.now() + 3600 * SECOND
    assert sent == [] and second.enqueued_at is None  # an hour: the beat sends it then
    assert not DeliveryAttempt.objects.filter(publication=second).exists()
    assert sandbox_calls.publish == 1
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING


# --- Sweeper --------------------------------------------------------------------------------------


def test_the_sweeper_records_a_delivery_the_network_has(
    world, sandbox_calls, django_capture_on_commit_callbacks, settings
):
    post, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)
    # A worker claims, the sandbox publishes, and the worker dies before recording it.
    assert publishing.claim(publication.pk)
    publication.refresh_from_db()
    get_connector("sandbox").deliver(publication, ReleasedContent.of(publication.revision))
    later = timezone.now() + (settings.REVIEWFLOW["DELIVERY_LEASE_SECONDS"] + 1) * SECOND

    with django_capture_on_commit_callbacks(execute=True):
        assert publishing.recover_stalled(now=later) == []  # nothing to send again

    publication.refresh_from_db()
    assert publication.state == P.DELIVERED
    assert publication.external_id == f"sandbox-{SandboxPost.objects.get().pk}"
    assert sandbox_calls.publish == 1 and SandboxPost.objects.count() == 1
    assert "found on the network" in publication.delivery_attempts.get().detail
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHED
    assert LedgerEntry.objects.filter(event="publication.delivered").count() == 1


def test_the_sweeper_asks_the_network_before_sending_again(
    world, monkeypatch, django_capture_on_commit_callbacks, settings
):
    asked = []

    def find_delivery(self, account, key, content):
        asked.append((account.pk, key, content.content_hash))
        return None

    monkeypatch.setattr(SandboxConnector, "find_delivery", find_delivery)
    post, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)
    assert publishing.claim(publication.pk)
    later = timezone.now() + (settings.REVIEWFLOW["DELIVERY_LEASE_SECONDS"] + 1) * SECOND

    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert publishing.recover_stalled(now=later) == [publication.pk]

    key = publication.idempotency_key
    assert asked == [(world.lyon_sandbox.pk, key, post.approved_revision.content_hash)]
    publication.refresh_from_db()
    assert publication.state == P.PENDING and publication.idempotency_key == key
    assert publication.lost_claims == 1 and len(sent) == 1


# --- Partial success ------------------------------------------------------------------------------


def test_partial_success_is_said_and_retry_sends_only_the_failed(
    world, hook_account, webhook_receiver, sandbox_calls, django_capture_on_commit_callbacks, client
):
    webhook_receiver.refuse(400)
    post = approve(
        world, [world.lyon_sandbox, hook_account], django_capture_on_commit_callbacks, execute=True
    )

    assert post.state == State.PARTIALLY_PUBLISHED
    sandbox = Publication.objects.get(post=post, account=world.lyon_sandbox)
    hook = Publication.objects.get(post=post, account=hook_account)
    assert (sandbox.state, hook.state) == (P.DELIVERED, P.FAILED)
    entry = LedgerEntry.objects.get(event="post.partially_published")
    assert (entry.payload["delivered"], entry.payload["failed"]) == (1, 1)
    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Partly published" in page and "HTTP 400" in page
    assert "Retry publishing" in page and "only the failed publications" in page

    webhook_receiver.fix()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(reverse("post_retry", args=[post.pk])).status_code == 302

    post.refresh_from_db()
    assert post.state == State.PUBLISHED
    retried = LedgerEntry.objects.get(event="post.retried")
    assert retried.payload["publications"] == [hook.pk]
    again = Publication.objects.get(pk=sandbox.pk)
    assert (again.attempts, again.delivered_at) == (1, sandbox.delivered_at)
    assert sandbox_calls.publish == 1 and SandboxPost.objects.count() == 1
    hook.refresh_from_db()
    assert hook.state == P.DELIVERED and hook.error == ""
    assert webhook_receiver.delivered_ids == [hook.idempotency_key]


def test_nothing_delivered_is_failed(world, sandbox_calls, django_capture_on_commit_callbacks):
    sandbox_calls.error = DeliveryError("sandbox refused the post", permanent=True)
    post = approve(world, [world.lyon_sandbox], django_capture_on_commit_callbacks, execute=True)
    assert post.state == State.FAILED


# --- Schedule -------------------------------------------------------------------------------------


def edit(post, by, **changes):
    revision = post.current_revision
    fields = {
        "text": revision.text,
        "link": revision.link,
        "account_ids": list(revision.accounts.values_list("pk", flat=True)),
        "tag_ids": [],
        "publish_at": post.publish_at,
        **changes,
    }
    return workflow.edit_post(post.pk, by, **fields)


def test_rescheduling_keeps_the_approval_and_moves_the_outbox(
    world, django_capture_on_commit_callbacks, client
):
    first = (timezone.now() + timezone.timedelta(days=3)).replace(microsecond=0)
    post = approve(
        world, [world.lyon_sandbox], django_capture_on_commit_callbacks, publish_at=first
    )
    approved_revision = post.approved_revision_id
    second = first - timezone.timedelta(days=1)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post = edit(post, world.alice, publish_at=second)

    post.refresh_from_db()
    assert post.state == State.APPROVED and post.approved_revision_id == approved_revision
    assert post.publish_at == second
    publication = Publication.objects.get(post=post)
    assert publication.next_attempt_at == second
    assert LedgerEntry.objects.filter(event="post.edited", post_id=post.pk).exists()
    # Still to come: not released, nothing sent.
    assert not LedgerEntry.objects.filter(event="post.released", post_id=post.pk).exists()
    assert enqueued_deliveries(callbacks) == []
    assert workflow.due_post_ids(now=second - SECOND) == []
    assert workflow.due_post_ids(now=second) == [post.pk]
    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Scheduled: released" in page and "Scheduled for" in page

    # "As soon as possible": released at once, in the edit's transaction, with its publication.
    with django_capture_on_commit_callbacks(execute=True):
        edit(post, world.alice, publish_at=None)
        released = LedgerEntry.objects.filter(post_id=post.pk).order_by("-seq")[:2]
        assert [e.event for e in released] == ["post.released", "post.edited"]
    post.refresh_from_db()
    assert post.state == State.PUBLISHED
    assert SandboxPost.objects.count() == 1


def test_a_publish_time_after_the_approval_expires_is_refused(
    world, django_capture_on_commit_callbacks
):
    soon = timezone.now() + timezone.timedelta(days=1)
    post = approve(world, [world.lyon_sandbox], django_capture_on_commit_callbacks, publish_at=soon)
    too_late = post.approval_expires_at + timezone.timedelta(days=1)
    with pytest.raises(workflow.ContentError) as refused:
        edit(post, world.alice, publish_at=too_late)
    assert "approval is valid until" in refused.value.errors["publish_at"]


def test_cancelling_before_release_empties_the_outbox(world, django_capture_on_commit_callbacks):
    later = timezone.now() + timezone.timedelta(days=1)
    post = approve(
        world, [world.lyon_sandbox], django_capture_on_commit_callbacks, publish_at=later
    )
    workflow.withdraw(post.pk, world.alice, reason="Event cancelled")

    assert Post.objects.get(pk=post.pk).state == State.WITHDRAWN
    assert not Publication.objects.exists()
    assert workflow.due_post_ids(now=later + SECOND) == []
    assert publishing.enqueue_due(now=later + SECOND) == ([], [])


def test_after_release_rescheduling_is_refused_clearly(
    world, django_capture_on_commit_callbacks, client
):
    post, _ = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)
    message = "released for publishing and is now publishing: it can no longer be edited or "
    with pytest.raises(workflow.Conflict) as refused:
        edit(post, world.alice, publish_at=timezone.now() + timezone.timedelta(days=1))
    assert message in refused.value.message

    client.force_login(world.alice)
    response = client.get(reverse("post_edit", args=[post.pk]))
    assert response.status_code == 409
    assert "can no longer be edited or rescheduled" in response.content.decode()


# --- Approval validity ----------------------------------------------------------------------------


def test_the_author_is_warned_once_before_the_approval_expires(
    world, django_capture_on_commit_callbacks, settings
):
    cfg(settings, EXPIRY_WARNING_DAYS=3)
    now = timezone.now()
    far = now + timezone.timedelta(days=20)
    late = approve(world, [world.lyon_sandbox], django_capture_on_commit_callbacks, publish_at=far)
    in_time = approve(
        world,
        [world.lyon_sandbox],
        django_capture_on_commit_callbacks,
        publish_at=now + timezone.timedelta(days=1),
    )
    expires = now + timezone.timedelta(days=2)
    Post.objects.filter(pk__in=[late.pk, in_time.pk]).update(approval_expires_at=expires)

    assert workflow.warn_expiring(now=now - timezone.timedelta(days=2)) == []  # not yet
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.warn_expiring(now=now) == [late.pk]  # in_time is released before
        warn_expiring_approvals.apply()  # once only

    late.refresh_from_db()
    assert late.expiry_warned_at is not None
    [mail] = Notification.objects.filter(kind=Notification.Kind.APPROVAL_EXPIRING)
    assert mail.user == world.alice and mail.post_id == late.pk
    assert "expires" in mail.subject and "must be reviewed again" in mail.body
    assert LedgerEntry.objects.filter(event="post.approval_expiring").count() == 1


def test_a_post_warned_then_edited_is_approved_and_released_again_and_warned_anew(
    world, django_capture_on_commit_callbacks, settings
):
    """The warning belongs to one approval: the next one starts unwarned, and its release in
    the same transaction is not mistaken for a concurrent change."""
    cfg(settings, EXPIRY_WARNING_DAYS=3)
    far = timezone.now() + timezone.timedelta(days=20)
    post = approve(world, [world.lyon_sandbox], django_capture_on_commit_callbacks, publish_at=far)
    Post.objects.filter(pk=post.pk).update(expiry_warned_at=timezone.now())
    edited = workflow.edit_post(  # new content, to be published at once: voided, in review
        post.pk,
        world.alice,
        text="Portes ouvertes samedi, de 9 h à 17 h.",
        account_ids=[world.lyon_sandbox.pk],
    )
    assert edited.state == State.IN_REVIEW

    with django_capture_on_commit_callbacks(execute=True):
        workflow.decide(
            post.pk,
            world.rita,
            outcome="approve",
            revision_hash=edited.current_revision.content_hash,
        )

    post.refresh_from_db()
    assert post.state == State.PUBLISHED
    assert post.expiry_warned_at is None


def test_an_approval_not_released_in_time_expires(world, django_capture_on_commit_callbacks):
    far = timezone.now() + timezone.timedelta(days=20)
    post = approve(world, [world.lyon_sandbox], django_capture_on_commit_callbacks, publish_at=far)
    Post.objects.filter(pk=post.pk).update(
        approval_expires_at=timezone.now() - timezone.timedelta(minutes=1)
    )

    assert workflow.due_post_ids() == [post.pk]
    release_due_posts.apply()

    post.refresh_from_db()
    assert post.state == State.EXPIRED
    assert not Publication.objects.exists()
    assert LedgerEntry.objects.get(event="post.expired").payload["publications_cancelled"] == 1
    assert SandboxPost.objects.count() == 0


def test_beat_and_countdowns_stay_short(settings):
    schedule = settings.CELERY_BEAT_SCHEDULE
    for name in (
        "release-due-posts",
        "deliver-due-publications",
        "recover-stalled-publications",
        "warn-expiring-approvals",
    ):
        assert name in schedule
    assert schedule["deliver-due-publications"]["schedule"] <= 60
    countdown = settings.REVIEWFLOW["DELIVERY_COUNTDOWN_MAX_SECONDS"]
    assert countdown < 60
    visibility = getattr(django_settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}).get(
        "visibility_timeout"
    )
    assert visibility is None or countdown < visibility


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_messages_for_one_publication_deliver_it_once(world, sandbox_calls, monkeypatch):
    """Duplicate messages (a resend by the beat, a redelivery) race: one claim wins."""
    monkeypatch.setattr(publishing, "enqueue_deliveries", lambda ids, countdown=None: None)
    post = workflow.create_post(world.alice, text=TEXT, account_ids=[world.lyon_sandbox.pk])
    workflow.submit(post.pk, world.alice)
    workflow.decide(  # releases the post; its delivery messages are lost
        post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
    )
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING
    publication = Publication.objects.get(post=post)
    assert publication.state == P.PENDING

    results = at_once(8, lambda n: publishing.deliver(publication.pk))

    assert results.count(True) == 1 and results.count(False) == 7
    assert sandbox_calls.publish == 1 and SandboxPost.objects.count() == 1
    publication.refresh_from_db()
    assert publication.state == P.DELIVERED and publication.attempts == 1
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHED


def test_a_post_left_unsettled_by_a_dead_worker_is_settled_by_the_sweeper(
    world, django_capture_on_commit_callbacks
):
    """The worker recorded the delivery, then died before settling the post."""
    from approvals import publishing, workflow
    from approvals.connectors import Delivered
    from approvals.models import Post, Publication

    post = workflow.create_post(world.alice, text="Salon", account_ids=[world.lyon_sandbox.pk])
    post = workflow.submit(post.pk, world.alice)
    with django_capture_on_commit_callbacks(execute=False):  # released, delivery not sent
        workflow.decide(
            post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
        )
    assert Post.objects.get(pk=post.pk).state == "publishing"
    publication = Publication.objects.get(post=post)
    assert publishing.claim(publication.pk)
    publication.refresh_from_db()
    publishing._finish(publication, ok=True, detail="", delivered=Delivered("x-1"))
    assert Post.objects.get(pk=post.pk).state == "publishing"  # no settle: the worker died
    with django_capture_on_commit_callbacks(execute=True):
        publishing.recover_stalled()
    assert Post.objects.get(pk=post.pk).state == "published"
