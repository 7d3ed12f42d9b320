"""Take-down: an author or a compliance admin retracts a published post from every network."""

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals import publishing, workflow
from approvals.models import DeliveryAttempt, LedgerEntry, Post, Publication, SandboxPost
from approvals.models.posts import State

from .conftest import through_review

pytestmark = pytest.mark.django_db

TEXT = "Portes ouvertes samedi : taux < 3 %, sans frais."
P = Publication.State


@pytest.fixture(autouse=True)
def _retry_at_once(settings):
    settings.REVIEWFLOW = {
        **settings.REVIEWFLOW,
        "DELIVERY_BACKOFF_SECONDS": 0,
        "DELIVERY_MAX_ATTEMPTS": 3,
    }


def published(world, accounts, callbacks):
    """alice's post, approved by rita, released and delivered (eager tasks, callbacks run)."""
    return through_review(world, callbacks, accounts, TEXT)


def retract_url(post):
    return reverse("post_retract", args=[post.pk])


def test_the_author_retracts_from_every_network(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, client
):
    post = published(world, [world.lyon_sandbox, hook_account], django_capture_on_commit_callbacks)
    assert post.state == State.PUBLISHED
    sandbox = Publication.objects.get(post=post, account=world.lyon_sandbox)
    hook = Publication.objects.get(post=post, account=hook_account)
    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Retract from every network" in page

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(retract_url(post), {"reason": "Rate no longer offered"})
    assert response.status_code == 302
    # Committed first, deleted after: the post is retracted, the deletions are queued.
    post.refresh_from_db()
    assert post.state == State.RETRACTED
    assert set(Publication.objects.filter(post=post).values_list("state", flat=True)) == {
        P.RETRACTING
    }
    entry = LedgerEntry.objects.get(event="post.retracted")
    assert entry.actor == "alice" and entry.payload["reason"] == "Rate no longer offered"
    assert sorted(entry.payload["publications"]) == sorted([sandbox.pk, hook.pk])
    assert webhook_receiver.received[-1].payload["type"] == "post.published"

    with django_capture_on_commit_callbacks(execute=True):
        for callback in callbacks:
            callback()

    sandbox.refresh_from_db()
    hook.refresh_from_db()
    assert (sandbox.state, hook.state) == (P.RETRACTED, P.RETRACTED)
    assert sandbox.retracted_at is not None and hook.retracted_at is not None
    # Sandbox: hidden from the feed, kept for the record.
    kept = SandboxPost.objects.get()
    assert kept.retracted_at is not None
    feed = client.get(reverse("sandbox_feed", args=[world.lyon_sandbox.pk])).content.decode()
    assert f"sandbox-{kept.pk}" not in feed and "Nothing published here yet" in feed
    # Webhook: a signed post.retracted event naming the receiver's id for the post.
    request = webhook_receiver.received[-1]
    assert request.verified, request.error
    assert request.payload["type"] == "post.retracted"
    assert request.payload["data"]["external_id"] == hook.external_id == "rcv-1"
    assert request.webhook_id != hook.idempotency_key
    # One ledger entry per deletion.
    deletions = LedgerEntry.objects.filter(event="publication.retracted").order_by("seq")
    assert sorted(e.payload["publication"] for e in deletions) == sorted([sandbox.pk, hook.pk])
    assert {e.payload["network"] for e in deletions} == {"sandbox", "webhook"}
    assert DeliveryAttempt.objects.filter(action="retract", ok=True).count() == 2

    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Retracted" in page and page.count(", removed ") == 2
    assert "Retract from every network" not in page


def test_a_compliance_admin_may_retract(world, django_capture_on_commit_callbacks, client):
    post = published(world, [world.lyon_sandbox], django_capture_on_commit_callbacks)
    client.force_login(world.carla)
    assert (
        "Retract from every network"
        in client.get(reverse("post_detail", args=[post.pk])).content.decode()
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(retract_url(post), {"reason": "Regulator request"})
    assert response.status_code == 302
    assert Post.objects.get(pk=post.pk).state == State.RETRACTED
    assert Publication.objects.get(post=post).state == P.RETRACTED
    assert LedgerEntry.objects.get(event="post.retracted").actor == "carla"


def test_a_reviewer_may_not_and_another_team_sees_nothing(
    world, django_capture_on_commit_callbacks, client
):
    post = published(world, [world.lyon_sandbox], django_capture_on_commit_callbacks)

    client.force_login(world.rita)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Retract from every network" not in page
    assert client.post(retract_url(post), {"reason": "I do not like it"}).status_code == 403

    client.force_login(world.bruno)
    assert client.post(retract_url(post), {"reason": "Not mine"}).status_code == 404
    client.force_login(world.tom)
    assert client.post(retract_url(post), {"reason": "Not my team"}).status_code == 404

    assert Post.objects.get(pk=post.pk).state == State.PUBLISHED
    assert not LedgerEntry.objects.filter(event="post.retracted").exists()
    assert SandboxPost.objects.get().retracted_at is None


def test_a_reason_is_required_and_only_published_posts_are_retracted(
    world, django_capture_on_commit_callbacks, client, draft
):
    post = published(world, [world.lyon_sandbox], django_capture_on_commit_callbacks)
    client.force_login(world.alice)
    response = client.post(retract_url(post), {"reason": "  "})
    assert response.status_code == 400 and "Say why" in response.content.decode()
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHED

    response = client.post(retract_url(draft), {"reason": "Changed my mind"})
    assert response.status_code == 409
    assert Post.objects.get(pk=draft.pk).state == State.DRAFT


def test_a_failed_removal_is_shown_and_can_be_tried_again(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, client
):
    post = published(world, [hook_account], django_capture_on_commit_callbacks)
    publication = Publication.objects.get(post=post)
    webhook_receiver.always(500)
    client.force_login(world.alice)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(retract_url(post), {"reason": "Wrong branch"})

    publication.refresh_from_db()
    assert publication.state == P.RETRACT_FAILED
    assert "HTTP 500" in publication.error and "gave up after 3 attempts" in publication.error
    assert publication.retracted_at is None
    assert len([r for r in webhook_receiver.received if r.payload["type"] == "post.retracted"]) == 3
    failed = LedgerEntry.objects.get(event="publication.retract_failed")
    assert failed.payload["error"] == publication.error
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "removal failed" in page and "HTTP 500" in page
    assert "Try the failed removals again" in page

    webhook_receiver.fix()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(retract_url(post)).status_code == 302

    publication.refresh_from_db()
    assert publication.state == P.RETRACTED and publication.error == ""
    assert LedgerEntry.objects.filter(event="post.retract_retried").count() == 1
    assert LedgerEntry.objects.filter(event="publication.retracted").count() == 1
    retractions = [r for r in webhook_receiver.received if r.payload["type"] == "post.retracted"]
    assert len({r.webhook_id for r in retractions}) == 1  # the same id on every try
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Try the failed removals again" not in page


def test_a_partly_published_post_is_retracted_where_it_went(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks
):
    webhook_receiver.refuse(400)
    post = published(world, [world.lyon_sandbox, hook_account], django_capture_on_commit_callbacks)
    assert post.state == State.PARTIALLY_PUBLISHED

    with django_capture_on_commit_callbacks(execute=True):
        workflow.retract(post.pk, world.alice, reason="Incomplete campaign")

    states = dict(Publication.objects.filter(post=post).values_list("account__network", "state"))
    assert states == {"sandbox": P.RETRACTED, "webhook": P.FAILED}  # nothing to delete there
    assert LedgerEntry.objects.filter(event="publication.retracted").count() == 1
    assert [r.payload["type"] for r in webhook_receiver.received] == ["post.published"]


def test_a_lost_or_stalled_removal_is_picked_up_by_the_beat(
    world, django_capture_on_commit_callbacks, settings
):
    post = published(world, [world.lyon_sandbox], django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):  # the message is lost
        workflow.retract(post.pk, world.alice, reason="Outdated")
    publication = Publication.objects.get(post=post)
    assert publishing.claim_retraction(publication.pk)  # a worker takes it, then dies

    now = timezone.now()
    assert publishing.enqueue_due(now=now) == ([], [])  # claimed and recently sent
    config = settings.REVIEWFLOW
    later = now + timezone.timedelta(
        seconds=max(config["DELIVERY_LEASE_SECONDS"], config["DELIVERY_RESEND_SECONDS"]) + 1
    )
    assert publishing.enqueue_due(now=later) == ([], [publication.pk])
    assert publishing.retract(publication.pk, now=later) is True
    publication.refresh_from_db()
    assert publication.state == P.RETRACTED and publication.attempts == 2
    assert SandboxPost.objects.get().retracted_at is not None
