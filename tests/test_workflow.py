"""The lifecycle: every move a named transition, through approvals.workflow, with a ledger entry."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_fsm import TransitionNotAllowed

from approvals import ledger, workflow
from approvals.models import (
    Decision,
    LedgerEntry,
    Notification,
    Post,
    Publication,
    Revision,
    SandboxPost,
)
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


def test_resubmitting_unchanged_content_after_changes_requested_is_refused(
    world, changes_requested
):
    before = LedgerEntry.objects.count()
    with pytest.raises(workflow.Conflict, match="edit the post"):
        workflow.submit(changes_requested.pk, world.alice)
    assert Post.objects.get(pk=changes_requested.pk).state == State.CHANGES_REQUESTED
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


# --- Drafting or editing and submitting at once ---------------------------------------------------

BLOCKED_TEXT = "Rendement garanti de 8 % !"  # a promise of return: the default lexicon blocks it


def test_create_and_submit_at_once_sends_the_post_to_review(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post = workflow.create_post(
            world.alice,
            text="Portes ouvertes samedi à Lyon.",
            account_ids=[world.lyon_sandbox.pk],
            submit=True,
        )
    post = Post.objects.get(pk=post.pk)
    assert post.state == State.IN_REVIEW
    assert post.current_revision.number == 1 and post.revisions.count() == 1
    assert list(post.steps.values_list("revision_id", "state")) == [
        (post.current_revision_id, "active")
    ]
    entries = list(LedgerEntry.objects.filter(post_id=post.pk).order_by("seq"))
    assert [entry.event for entry in entries] == ["post.created", "post.submitted"]
    assert entries[1].payload["from"] == State.DRAFT and entries[1].payload["to"] == "in_review"
    assert sorted(m.to for m in mailoutbox) == [["rita@example.com"], ["sam@example.com"]]
    assert all(m.subject.startswith(f"Post #{post.pk} waits for your review") for m in mailoutbox)
    requested = Notification.objects.filter(post=post, kind=Notification.Kind.REVIEW_REQUESTED)
    assert requested.count() == 2 and all(row.sent_at is not None for row in requested)
    assert ledger.verify() is None


def test_create_and_submit_with_a_blocking_finding_saves_nothing(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    entries = LedgerEntry.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(workflow.Blocked, match="garanti"):
            workflow.create_post(
                world.alice, text=BLOCKED_TEXT, account_ids=[world.lyon_sandbox.pk], submit=True
            )
    assert not Post.objects.exists() and not Revision.objects.exists()
    assert LedgerEntry.objects.count() == entries
    assert not Notification.objects.exists() and mailoutbox == []


def test_create_and_submit_at_once_reads_less_than_drafting_then_submitting(world):
    """One transaction reads the new revision's accounts, tags and findings from what it just
    wrote, locks the post once, and updates it once (the move, with the revision pointer)."""

    def statements(work):
        with CaptureQueriesContext(connection) as queries:
            work()
        sql = [q["sql"].lstrip().upper() for q in queries.captured_queries]
        sql = [s for s in sql if not s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
        post_updates = sum(s.startswith('UPDATE "APPROVALS_POST"') for s in sql)
        return len(sql), sum(s.startswith("SELECT") for s in sql), post_updates

    content = {"text": "Webinaire épargne jeudi.", "account_ids": [world.lyon_sandbox.pk]}

    def separately():
        post = workflow.create_post(world.alice, **content)
        workflow.submit(post.pk, world.alice)

    def at_once():
        workflow.create_post(world.alice, **content, submit=True)

    separately()  # warm: the configuration's snapshot
    at_once()
    all_separate, reads_separate, _ = statements(separately)
    all_at_once, reads_at_once, post_updates = statements(at_once)
    assert post_updates == 1
    assert reads_at_once < reads_separate
    assert all_at_once < all_separate
    assert Post.objects.filter(state=State.IN_REVIEW).count() == 4


def test_a_new_revision_is_not_read_back(world, draft):
    """Its accounts and tags were just written: the ledger's summary, the policy checks and the
    route of the submit take them from what was written."""
    with CaptureQueriesContext(connection) as queries:
        workflow.edit_post(
            draft.pk,
            world.alice,
            text="Webinaire épargne jeudi. Capital at risk.",
            account_ids=[world.lyon_sandbox.pk],
            submit=True,
        )
    reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT")
        and ("approvals_revision_accounts" in q["sql"] or "approvals_revision_tags" in q["sql"])
    ]
    assert reads == []
    assert Post.objects.get(pk=draft.pk).state == State.IN_REVIEW


def test_edit_and_submit_a_draft_at_once(world, draft):
    post = workflow.edit_post(
        draft.pk,
        world.alice,
        text="Nos conseillers vous accueillent samedi. Capital at risk.",
        account_ids=[world.lyon_sandbox.pk],
        submit=True,
    )
    post = Post.objects.get(pk=post.pk)
    assert post.state == State.IN_REVIEW
    assert post.current_revision.number == 2
    assert post.current_revision.text.endswith("Capital at risk.")
    assert post.steps.get().revision == post.current_revision
    assert events(post) == ["post.created", "post.edited", "post.submitted"]
    assert ledger.verify() is None


def test_edit_and_submit_unchanged_text_after_changes_requested_saves_nothing(
    world, changes_requested
):
    """Only the publish time changed: the refusal to resubmit takes the new time back too."""
    from django.utils import timezone

    before = Post.objects.get(pk=changes_requested.pk)
    entries = LedgerEntry.objects.count()
    with pytest.raises(workflow.Conflict, match="edit the post before submitting it again"):
        workflow.edit_post(
            changes_requested.pk,
            world.alice,
            text=before.current_revision.text,
            account_ids=[world.lyon_sandbox.pk],
            publish_at=timezone.now() + timezone.timedelta(days=2),
            submit=True,
        )
    after = Post.objects.get(pk=changes_requested.pk)
    assert after.state == State.CHANGES_REQUESTED
    assert after.current_revision_id == before.current_revision_id
    assert after.publish_at is None and before.publish_at is None
    assert after.revisions.count() == 1
    assert LedgerEntry.objects.count() == entries


@pytest.mark.usefixtures("hours_apart")  # the review asked for changes a while ago
def test_edit_and_submit_after_changes_requested_sends_the_new_revision_to_review(
    world, changes_requested, mailoutbox, django_capture_on_commit_callbacks
):
    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        workflow.edit_post(
            changes_requested.pk,
            world.alice,
            text="Rates < 3%. Capital at risk.",
            account_ids=[world.lyon_sandbox.pk],
            submit=True,
        )
    post = Post.objects.get(pk=changes_requested.pk)
    assert post.state == State.IN_REVIEW and post.current_revision.number == 2
    assert post.steps.filter(revision=post.current_revision, state="active").count() == 1
    assert events(post)[-2:] == ["post.edited", "post.submitted"]
    assert sorted(m.to for m in mailoutbox) == [["rita@example.com"], ["sam@example.com"]]


def test_edit_and_submit_with_a_blocking_finding_keeps_the_draft_as_it_was(world, draft):
    entries = LedgerEntry.objects.count()
    with pytest.raises(workflow.Blocked):
        workflow.edit_post(
            draft.pk,
            world.alice,
            text=BLOCKED_TEXT,
            account_ids=[world.lyon_sandbox.pk],
            submit=True,
        )
    post = Post.objects.get(pk=draft.pk)
    assert post.state == State.DRAFT and post.current_revision_id == draft.current_revision_id
    assert post.revisions.count() == 1 and LedgerEntry.objects.count() == entries
