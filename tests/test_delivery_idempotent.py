"""At-most-once delivery: the claim, one publication per target, crash recovery, release gate."""

from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import publishing, workflow
from approvals.connectors import ReleasedContent, get_connector
from approvals.models import LedgerEntry, Post, Publication, SandboxPost, Tag
from approvals.models.posts import State
from approvals.tasks import deliver_publication, release_due_posts

from .conftest import enqueued_deliveries, released_with_approval
from .fakes.kit import released as content

pytestmark = pytest.mark.django_db

TEXT = "Portes ouvertes samedi : taux < 3 %, sans frais."


@pytest.fixture(params=["sandbox", "webhook"])
def target(request, world):
    """The account to publish to; `received()` counts what reached its network (duplicates too),
    `processed()` what a receiver that drops duplicate keys would have published."""
    if request.param == "sandbox":
        count = SandboxPost.objects.count  # the sandbox itself accepts one post per key
        return SimpleNamespace(account=world.lyon_sandbox, received=count, processed=count)
    receiver = request.getfixturevalue("webhook_receiver")
    return SimpleNamespace(
        account=request.getfixturevalue("hook_account"),
        received=lambda: len(receiver.received),
        processed=lambda: len(receiver.delivered_ids),
    )


LATER = timezone.timedelta(days=1)


def approved(world, account, callbacks_fixture, *, publish_at=None):
    """rita approves alice's post, its on-commit callbacks captured, not run; returns (post,
    callbacks).

    Without a publish time the approval releases the post in its own transaction and what waits
    for the commit is the delivery of its publication (beside the author's notification). With a
    publish time to come the post stays approved, and nothing is sent.
    """
    post = workflow.create_post(
        world.alice, text=TEXT, account_ids=[account.pk], publish_at=publish_at
    )
    workflow.submit(post.pk, world.alice)
    with callbacks_fixture(execute=False) as callbacks:
        workflow.decide(
            post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
        )
    post = Post.objects.get(pk=post.pk)
    publication = Publication.objects.get(post=post)
    if publish_at is None:
        assert post.state == State.PUBLISHING
        released_with_approval(post)
        assert enqueued_deliveries(callbacks) == [publication.pk]
    else:
        assert post.state == State.APPROVED
        assert not LedgerEntry.objects.filter(post_id=post.pk, event="post.released").exists()
        assert enqueued_deliveries(callbacks) == []
    assert publication.state == Publication.State.PENDING
    return post, callbacks


def released(world, account, callbacks_fixture):
    """A post released to its connectors, with its publication pending (delivery not run)."""
    post, _ = approved(world, account, callbacks_fixture)
    return post, Publication.objects.get(post=post)


def publish_time_comes(post):
    """The clock reaches the publish time of an approved post (its outbox is due then too)."""
    now = timezone.now()
    Post.objects.filter(pk=post.pk).update(publish_at=now)
    Publication.objects.filter(post=post, state=Publication.State.PENDING).update(
        next_attempt_at=now
    )


def test_delivering_twice_delivers_once(world, django_capture_on_commit_callbacks):
    post, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)

    assert publishing.deliver(publication.pk) is True
    assert publishing.deliver(publication.pk) is False
    deliver_publication.apply(args=[publication.pk]).get()

    assert SandboxPost.objects.count() == 1
    publication.refresh_from_db()
    assert publication.state == Publication.State.DELIVERED and publication.attempts == 1
    assert LedgerEntry.objects.filter(event="publication.delivered").count() == 1
    post.refresh_from_db()
    assert post.state == State.PUBLISHED


def test_the_webhook_is_called_once_when_delivery_runs_twice(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks
):
    _, publication = released(world, hook_account, django_capture_on_commit_callbacks)

    deliver_publication.apply(args=[publication.pk]).get()
    deliver_publication.apply(args=[publication.pk]).get()

    assert len(webhook_receiver.received) == 1
    assert webhook_receiver.delivered_ids == [publication.idempotency_key]


def test_one_publication_per_revision_and_account(world, django_capture_on_commit_callbacks):
    post, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)

    with pytest.raises(IntegrityError), transaction.atomic():
        Publication.objects.create(
            post=post, revision=publication.revision, account=publication.account
        )
    assert publishing.create_publications(post) == [publication]  # get, not create
    assert Publication.objects.count() == 1


def test_a_fresh_claim_is_left_alone(world, django_capture_on_commit_callbacks):
    _, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)
    assert publishing.claim(publication.pk)

    assert publishing.recover_stalled() == []
    lease = settings.REVIEWFLOW["DELIVERY_LEASE_SECONDS"]
    almost = timezone.now() + timezone.timedelta(seconds=lease - 5)
    assert publishing.recover_stalled(now=almost) == []

    publication.refresh_from_db()
    assert publication.state == Publication.State.SENDING
    assert SandboxPost.objects.count() == 0
    assert publishing.deliver(publication.pk) is False  # still claimed: nobody else delivers


def test_a_crashed_worker_publication_is_recovered_and_delivered_once(
    world, target, django_capture_on_commit_callbacks
):
    post, publication = released(world, target.account, django_capture_on_commit_callbacks)

    # A worker claims the publication and dies before it records the outcome.
    assert publishing.claim(publication.pk)
    lease = settings.REVIEWFLOW["DELIVERY_LEASE_SECONDS"]
    later = timezone.now() + timezone.timedelta(seconds=lease + 1)

    with django_capture_on_commit_callbacks(execute=True):
        assert publishing.recover_stalled(now=later) == [publication.pk]  # delivers (eager)

    assert target.received() == 1 and target.processed() == 1
    assert publishing.recover_stalled(now=later) == []
    publication.refresh_from_db()
    post.refresh_from_db()
    assert publication.state == Publication.State.DELIVERED
    assert post.state == State.PUBLISHED
    assert LedgerEntry.objects.filter(event="publication.delivered").count() == 1


def test_a_crash_mid_request_repeats_the_same_webhook_id(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks
):
    _, publication = released(world, hook_account, django_capture_on_commit_callbacks)

    # A worker claims, sends the request (the receiver accepts it), then dies before recording.
    assert publishing.claim(publication.pk)
    publication.refresh_from_db()
    get_connector("webhook").deliver(publication, ReleasedContent.of(publication.revision))
    lease = settings.REVIEWFLOW["DELIVERY_LEASE_SECONDS"]
    later = timezone.now() + timezone.timedelta(seconds=lease + 1)

    with django_capture_on_commit_callbacks(execute=True):
        assert publishing.recover_stalled(now=later) == [publication.pk]

    publication.refresh_from_db()
    assert publication.state == Publication.State.DELIVERED
    first, second = webhook_receiver.received
    assert first.verified and second.verified
    assert first.webhook_id == second.webhook_id == publication.idempotency_key
    # A receiver that drops duplicate webhook-ids processes it once.
    assert webhook_receiver.delivered_ids == [publication.idempotency_key]
    assert webhook_receiver.duplicates == 1
    assert publication.external_id == "rcv-1"


@pytest.mark.parametrize(
    "scheduled",
    [False, True],
    ids=["tampered between release and delivery", "tampered before the beat's release"],
)
def test_tampered_content_is_stopped_at_the_release_gate(
    world, target, django_capture_on_commit_callbacks, scheduled
):
    publish_at = timezone.now() + LATER if scheduled else None
    post, callbacks = approved(
        world, target.account, django_capture_on_commit_callbacks, publish_at=publish_at
    )
    revision = post.approved_revision

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE approvals_revision SET text=%s WHERE id=%s",
            ["Guaranteed 12% returns, no risk!", revision.pk],
        )
    with django_capture_on_commit_callbacks(execute=True):
        for callback in callbacks:
            callback()  # the delivery the approval's release scheduled (none when scheduled)
    if scheduled:
        assert target.received() == 0 and Post.objects.get(pk=post.pk).state == State.APPROVED
        publish_time_comes(post)
        with django_capture_on_commit_callbacks(execute=True):
            release_due_posts.apply()  # the release, then the delivery it schedules

    assert target.received() == 0
    publication = Publication.objects.get(post=post)
    post.refresh_from_db()
    assert publication.state == Publication.State.FAILED
    assert "hash" in publication.error
    assert post.state == State.FAILED
    entry = LedgerEntry.objects.get(event="publication.failed")
    assert entry.payload["publication"] == publication.pk and "hash" in entry.payload["error"]
    assert not LedgerEntry.objects.filter(event="publication.delivered").exists()


def test_editing_approved_content_voids_the_approval(
    world, target, django_capture_on_commit_callbacks
):
    # Approved for later: released now, it could no longer be edited (see test_delivery_engine).
    publish_at = timezone.now() + LATER
    post, callbacks = approved(
        world, target.account, django_capture_on_commit_callbacks, publish_at=publish_at
    )

    workflow.edit_post(
        post.pk,
        world.alice,
        text=TEXT + " Nouvelle date : samedi 14 juin.",
        account_ids=[target.account.pk],
        publish_at=publish_at,
    )

    post.refresh_from_db()
    assert post.state == State.IN_REVIEW
    assert post.approved_revision is None and post.current_revision.number == 2
    assert LedgerEntry.objects.filter(event="post.approval_voided").count() == 1
    assert not Publication.objects.exists()  # the voided approval's outbox is gone

    # Whatever the approval scheduled runs late, then the publish time comes and the beat runs.
    publish_time_comes(post)
    with django_capture_on_commit_callbacks(execute=True):
        for callback in callbacks:
            callback()
        release_due_posts.apply()
        workflow.release(post.pk)
    assert publishing.enqueue_due(now=timezone.now() + LATER) == ([], [])

    post.refresh_from_db()
    assert post.state == State.IN_REVIEW
    assert not Publication.objects.exists()
    assert not LedgerEntry.objects.filter(post_id=post.pk, event="post.released").exists()
    assert target.received() == 0


def test_a_delivery_that_keeps_losing_its_worker_ends_failed(
    world, django_capture_on_commit_callbacks
):
    """A message that kills workers (or cannot be recorded) must not loop forever."""
    post, publication = released(world, world.lyon_sandbox, django_capture_on_commit_callbacks)
    lease = timezone.timedelta(seconds=settings.REVIEWFLOW["DELIVERY_LEASE_SECONDS"] + 1)
    for _ in range(settings.REVIEWFLOW["DELIVERY_MAX_CLAIMS"]):
        assert publishing.claim(publication.pk)  # a worker takes it, then dies
        with django_capture_on_commit_callbacks(execute=False):
            publishing.recover_stalled(now=timezone.now() + lease)
    publication.refresh_from_db()
    post.refresh_from_db()
    assert publication.state == Publication.State.FAILED
    assert "did not complete" in publication.error
    assert post.state == State.FAILED
    assert SandboxPost.objects.count() == 0


def test_the_sandbox_accepts_one_post_per_key_and_answers_a_repeat_with_it(world):
    sandbox, account = get_connector("sandbox"), world.lyon_sandbox
    first = sandbox.publish(account, content(account, "Première version", ""), "key-1")
    with CaptureQueriesContext(connection) as queries:
        again = sandbox.publish(account, content(account, "Autre texte", ""), "key-1")
    other = sandbox.publish(account, content(account, "Autre texte", ""), "key-2")

    assert again == first  # the network's dedupe: the same post, same id and address
    assert other != first
    assert len(queries) == 1  # one statement, repeat or not
    assert list(SandboxPost.objects.order_by("pk").values_list("idempotency_key", "text")) == [
        ("key-1", "Première version"),  # the repeat did not overwrite what was published
        ("key-2", "Autre texte"),
    ]
    published_at = SandboxPost.objects.get(idempotency_key="key-1").published_at
    assert abs(timezone.now() - published_at) < timezone.timedelta(minutes=1)


@pytest.mark.parametrize("added", ["tag", "account"])
def test_a_delivery_refuses_a_tag_or_target_added_after_the_approval(
    world, django_capture_on_commit_callbacks, added
):
    """The delivery reads the revision's accounts and tags with its publication: one added
    behind the workflow's back after the approval fails the hash, and nothing is published."""
    post, _ = approved(world, world.lyon_sandbox, django_capture_on_commit_callbacks)
    revision = post.current_revision
    if added == "tag":
        revision.tags.add(Tag.objects.create(name="Ajouté en douce"))
    else:
        revision.accounts.add(world.paris_sandbox)
    publication = Publication.objects.get(post=post)

    assert publishing.deliver(publication.pk) is False
    publication.refresh_from_db()
    assert publication.state == Publication.State.FAILED
    assert "hash" in publication.error
    assert SandboxPost.objects.count() == 0


def test_released_content_reads_the_accounts_and_tags_as_stored_now(world, caplog):
    """The release gate's hash covers the revision's accounts and tags as the database holds
    them at delivery: a target or a tag added behind the workflow's back does not match. Read
    on their own (a take-down's lookup), they are one prepared query."""
    caplog.set_level("WARNING", logger="approvals.prepared")
    tag = Tag.objects.create(name="Campagne")
    post = workflow.create_post(
        world.alice, text=TEXT, account_ids=[world.lyon_sandbox.pk], tag_ids=[tag.pk]
    )
    revision = post.current_revision
    content = ReleasedContent.of(revision)
    assert (content.account_ids, content.tag_ids) == ((world.lyon_sandbox.pk,), (tag.pk,))
    assert content.hash_matches()

    revision.tags.add(Tag.objects.create(name="Ajouté en douce"))
    assert not ReleasedContent.of(revision).hash_matches()
    revision.tags.set([tag])
    revision.accounts.add(world.paris_sandbox)
    assert not ReleasedContent.of(revision).hash_matches()
    assert "unprepared" not in caplog.text
