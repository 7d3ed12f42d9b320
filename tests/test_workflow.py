"""The lifecycle: every move a named transition, through approvals.workflow, with a ledger entry."""

import pytest
from django_fsm import TransitionNotAllowed

from approvals import ledger, workflow
from approvals.models import Decision, LedgerEntry, Post, Publication, SandboxPost
from approvals.models.posts import State
from approvals.tasks import release_due_posts

from .conftest import enqueued_deliveries, released_with_approval

pytestmark = pytest.mark.django_db


def events(post):
    return list(LedgerEntry.objects.filter(post_id=post.pk).values_list("event", flat=True))


def approve(post, reviewer):
    post.refresh_from_db()
    return workflow.decide(
        post.pk,
        reviewer,
        outcome="approve",
        revision_hash=post.current_revision.content_hash,
    )


def test_state_field_is_protected(draft):
    with pytest.raises(AttributeError):
        draft.state = State.APPROVED
    with pytest.raises(TransitionNotAllowed):
        draft.approve()  # approving a draft is not a transition


def test_full_path_draft_to_published_writes_one_entry_per_move(
    world, in_review, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        approve(in_review, world.rita)
    post = Post.objects.get(pk=in_review.pk)
    assert post.state == State.PUBLISHED
    assert events(post) == [
        "post.created",
        "post.submitted",
        "decision.approve",
        "post.approved",
        "post.released",
        "publication.delivered",
        "post.published",
    ]
    published = SandboxPost.objects.get()
    assert published.text == post.approved_revision.text
    assert ledger.verify() is None


def test_the_last_approval_releases_the_post_in_its_transaction(
    world, in_review, django_capture_on_commit_callbacks
):
    """No publish time: approved, then released under the same lock and in the same transaction;
    only the delivery waits for the commit."""
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        approve(in_review, world.rita)
    post = Post.objects.get(pk=in_review.pk)
    assert post.state == State.PUBLISHING  # no on-commit callback has run
    assert events(post)[-3:] == ["decision.approve", "post.approved", "post.released"]
    approved, released = released_with_approval(post)
    assert approved.actor == "rita" and released.actor == "system"
    publication = Publication.objects.get(post=post)
    assert released.payload["publications"] == [publication.pk]
    assert enqueued_deliveries(callbacks) == [publication.pk]
    assert publication.state == Publication.State.PENDING and SandboxPost.objects.count() == 0


def test_an_approval_for_later_is_released_by_the_beat_when_its_time_comes(
    world, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    post = workflow.create_post(
        world.alice,
        text="Webinaire épargne le 3 mars.",
        account_ids=[world.lyon_sandbox.pk],
        publish_at=timezone.now() + timezone.timedelta(hours=2),
    )
    post = workflow.submit(post.pk, world.alice)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        approve(post, world.rita)
    post.refresh_from_db()
    assert post.state == State.APPROVED
    assert events(post)[-1] == "post.approved" and enqueued_deliveries(callbacks) == []
    assert workflow.due_post_ids() == []
    assert workflow.release(post.pk).state == State.APPROVED  # not due: nothing happens
    assert events(post)[-1] == "post.approved"

    Post.objects.filter(pk=post.pk).update(publish_at=timezone.now())  # its time comes
    with django_capture_on_commit_callbacks(execute=True):
        release_due_posts.apply()
    post.refresh_from_db()
    assert post.state == State.PUBLISHED
    assert events(post)[-4:] == [
        "post.approved",
        "post.released",
        "publication.delivered",
        "post.published",
    ]
    assert SandboxPost.objects.count() == 1


def test_changes_requested_then_resubmitted_by_author(world, in_review):
    revision_hash = in_review.current_revision.content_hash
    workflow.decide(
        in_review.pk,
        world.rita,
        outcome="request_changes",
        reason="Add the risk warning.",
        revision_hash=revision_hash,
    )
    workflow.edit_post(
        in_review.pk,
        world.alice,
        text="Rates < 3%. Capital at risk.",
        account_ids=[world.lyon_sandbox.pk],
    )
    post = workflow.submit(in_review.pk, world.alice, comment="Warning added")
    assert post.state == State.IN_REVIEW
    assert post.current_revision.number == 2
    entry = LedgerEntry.objects.get(event="post.changes_requested")
    assert entry.payload["reason"] == "Add the risk warning." and entry.actor == "rita"


def test_author_can_never_decide_on_own_post(world, django_user_model, in_review):
    from guardian.shortcuts import assign_perm

    assign_perm("approvals.review_team", world.alice, world.lyon)  # even when granted
    with pytest.raises(workflow.NotAllowed):
        approve(in_review, world.alice)
    in_review.refresh_from_db()
    assert in_review.state == State.IN_REVIEW
    assert not Decision.objects.exists()


def test_reviewer_of_another_team_cannot_decide(world, in_review):
    with pytest.raises(workflow.NotAllowed):
        approve(in_review, world.tom)
    assert Post.objects.get(pk=in_review.pk).state == State.IN_REVIEW


def test_refused_move_changes_nothing_and_logs_nothing(world, draft):
    before = LedgerEntry.objects.count()
    with pytest.raises(workflow.Conflict):
        workflow.retry(draft.pk, world.alice)
    assert LedgerEntry.objects.count() == before
    assert Post.objects.get(pk=draft.pk).state == State.DRAFT


def test_rejection_and_withdrawal_are_final(world, in_review, draft):
    workflow.decide(
        in_review.pk,
        world.sam,
        outcome="reject",
        reason="Misleading.",
        revision_hash=in_review.current_revision.content_hash,
    )
    with pytest.raises(workflow.Conflict):
        workflow.submit(in_review.pk, world.alice)
    with pytest.raises(workflow.Conflict):
        workflow.edit_post(in_review.pk, world.alice, text="x", account_ids=[world.lyon_sandbox.pk])


def test_resubmitting_unchanged_content_after_changes_requested_is_refused(world, in_review):
    workflow.decide(
        in_review.pk,
        world.rita,
        outcome="request_changes",
        reason="Add the risk warning.",
        revision_hash=in_review.current_revision.content_hash,
    )
    before = LedgerEntry.objects.count()
    with pytest.raises(workflow.Conflict, match="edit the post"):
        workflow.submit(in_review.pk, world.alice)
    assert Post.objects.get(pk=in_review.pk).state == State.CHANGES_REQUESTED
    assert LedgerEntry.objects.count() == before


def test_a_broken_rule_refuses_submission_instead_of_skipping_review(world, draft):
    from approvals.models import ApprovalRule

    ApprovalRule.objects.create(name="Typo", condition={"netwrk": ["x"]})  # saved without clean()
    with pytest.raises(workflow.Conflict, match="Typo"):
        workflow.submit(draft.pk, world.alice)
    assert Post.objects.get(pk=draft.pk).state == State.DRAFT


def test_an_expired_approval_is_resubmitted_as_a_new_revision(
    world, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    post = workflow.create_post(
        world.alice,
        text="Webinaire épargne le 3 mars.",
        account_ids=[world.lyon_sandbox.pk],
        publish_at=timezone.now() + timezone.timedelta(days=5),
    )
    post = workflow.submit(post.pk, world.alice)
    with django_capture_on_commit_callbacks(execute=False):
        workflow.decide(
            post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
        )
    # The approval lapses before the publish time comes.
    Post.objects.filter(pk=post.pk).update(approval_expires_at=timezone.now())
    workflow.release(post.pk)
    post.refresh_from_db()
    assert post.state == State.EXPIRED
    workflow.submit(post.pk, world.alice, comment="Still valid")
    post.refresh_from_db()
    assert post.state == State.IN_REVIEW
    assert post.current_revision.number == 2
    assert post.current_revision.content_hash == post.revisions.get(number=1).content_hash
    assert post.steps.filter(revision=post.current_revision, state="active").count() == 1
