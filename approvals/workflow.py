"""The only code that moves a Post between states.

Each function validates and locks the post row first, then changes data and writes its ledger
entry in the same transaction, then schedules side effects with transaction.on_commit.
"""

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransition, can_proceed, has_transition_perm

from . import ledger, publishing
from .models import Decision, Post, Revision, SocialAccount
from .models.posts import EDITABLE_STATES, State, content_hash
from .text import clean_text


class WorkflowError(Exception):
    """A refused action, with a message for the person who asked and an HTTP status."""

    status = 400

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class NotAllowed(WorkflowError):
    status = 403


class Conflict(WorkflowError):
    """Someone else acted first, or the content changed since the form was shown."""

    status = 409


def _lock(post_id):
    try:
        return (
            Post.objects.select_for_update(of=("self",))
            .select_related("current_revision", "team", "author")
            .get(pk=post_id)
        )
    except Post.DoesNotExist:
        raise WorkflowError("This post does not exist.") from None


def _move(post, transition_name, user, unmet=None):
    """Run one named transition after checking its permission and conditions."""
    method = getattr(post, transition_name)
    if not can_proceed(method, check_conditions=False):
        raise Conflict(
            f"This post is {post.get_state_display().lower()}; "
            f"“{transition_name.replace('_', ' ')}” is not possible now."
        )
    if user is not None and not has_transition_perm(method, user):
        raise NotAllowed("You are not allowed to do this on this post.")
    if not can_proceed(method):
        raise Conflict(unmet or "This post is not ready for that yet.")
    before = post.state
    method()
    try:
        post.save()
    except ConcurrentTransition:
        raise Conflict("Someone else changed this post at the same moment; reload it.") from None
    return before


def _validate_content(author, text, link, account_ids):
    text = clean_text(text or "").strip()
    link = (link or "").strip()
    errors = {}
    max_length = settings.REVIEWFLOW["MAX_POST_LENGTH"]
    if not text:
        errors["text"] = "Write the text of the post."
    elif len(text) > max_length:
        errors["text"] = f"The text is {len(text)} characters long; the maximum is {max_length}."
    accounts = list(SocialAccount.objects.usable_by(author).filter(pk__in=account_ids))
    if not account_ids:
        errors["accounts"] = "Choose at least one account to publish to."
    elif len(accounts) != len(set(account_ids)):
        errors["accounts"] = "One of the chosen accounts is not one you may publish to."
    if errors:
        raise ContentError(errors)
    return text, link, accounts


class ContentError(WorkflowError):
    """Invalid content, with one message per form field."""

    def __init__(self, errors):
        super().__init__(" ".join(errors.values()))
        self.errors = errors


def _new_revision(post, author, text, link, accounts):
    number = (post.current_revision.number + 1) if post.current_revision_id else 1
    revision = Revision.objects.create(
        post=post,
        number=number,
        text=text,
        link=link,
        content_hash=content_hash(text, link, [a.pk for a in accounts]),
        created_by=author,
    )
    revision.accounts.set(accounts)
    return revision


def _revision_summary(revision):
    return {
        "revision": revision.number,
        "content_hash": revision.content_hash,
        "text": revision.text,
        "link": revision.link,
        "accounts": sorted(a.pk for a in revision.accounts.all()),
    }


@transaction.atomic
def create_post(author, *, text, link="", account_ids=(), publish_at=None):
    membership = getattr(author, "membership", None)
    if membership is None:
        raise NotAllowed("Only advisors who belong to a team can draft posts.")
    text, link, accounts = _validate_content(author, text, link, account_ids)
    post = Post.objects.create(team_id=membership.team_id, author=author, publish_at=publish_at)
    post.current_revision = _new_revision(post, author, text, link, accounts)
    post.save(update_fields=["current_revision"])
    ledger.append(
        "post.created",
        actor=author,
        post=post,
        publish_at=publish_at.isoformat() if publish_at else None,
        **_revision_summary(post.current_revision),
    )
    return post


@transaction.atomic
def edit_post(post_id, by, *, text, link="", account_ids=(), publish_at=None):
    """Save new content. Editing approved content voids the approval and resubmits it."""
    post = _lock(post_id)
    if by.pk != post.author_id:
        raise NotAllowed("Only the author can edit this post.")
    if post.state not in EDITABLE_STATES:
        raise Conflict(f"A post that is {post.get_state_display().lower()} cannot be edited.")
    text, link, accounts = _validate_content(by, text, link, account_ids)
    changed = content_hash(text, link, [a.pk for a in accounts]) != (
        post.current_revision.content_hash
    )
    schedule_changed = publish_at != post.publish_at
    if not changed and not schedule_changed:
        return post
    post.publish_at = publish_at
    if changed:
        post.current_revision = _new_revision(post, by, text, link, accounts)
    if changed and post.state == State.APPROVED:
        before = _move(post, "void_approval", by)
        ledger.append(
            "post.approval_voided",
            actor=by,
            post=post,
            **{"from": before, "to": post.state},
            **_revision_summary(post.current_revision),
        )
    else:
        post.save()
        ledger.append(
            "post.edited",
            actor=by,
            post=post,
            publish_at=publish_at.isoformat() if publish_at else None,
            **(_revision_summary(post.current_revision) if changed else {}),
        )
    return post


@transaction.atomic
def submit(post_id, by, *, comment=""):
    post = _lock(post_id)
    before = _move(post, "submit", by, unmet="Choose at least one account before submitting.")
    ledger.append(
        "post.submitted",
        actor=by,
        post=post,
        comment=clean_text(comment).strip(),
        revision=post.current_revision.number,
        content_hash=post.current_revision.content_hash,
        **{"from": before, "to": post.state},
    )
    return post


@transaction.atomic
def withdraw(post_id, by, *, reason=""):
    post = _lock(post_id)
    before = _move(post, "withdraw", by)
    ledger.append(
        "post.withdrawn",
        actor=by,
        post=post,
        reason=clean_text(reason).strip(),
        **{"from": before, "to": post.state},
    )
    return post


_OUTCOME_TRANSITIONS = {
    Decision.Outcome.APPROVE: "approve",
    Decision.Outcome.REQUEST_CHANGES: "request_changes",
    Decision.Outcome.REJECT: "reject",
}


@transaction.atomic
def decide(post_id, by, *, outcome, revision_hash, reason=""):
    """A reviewer's decision on the revision whose hash their screen showed."""
    if outcome not in _OUTCOME_TRANSITIONS:
        raise WorkflowError("Unknown decision.")
    reason = clean_text(reason or "").strip()
    if outcome != Decision.Outcome.APPROVE and not reason:
        raise ContentError({"reason": "Say why, so the author knows what to change."})
    post = _lock(post_id)
    if by.pk == post.author_id:
        raise NotAllowed("You cannot decide on your own post.")
    if post.state != State.IN_REVIEW:
        last = post.decisions.select_related("reviewer").last()
        who = f" by {last.reviewer.get_username()}" if last else ""
        raise Conflict(
            f"Already decided{who}: this post is now {post.get_state_display().lower()}."
        )
    revision = post.current_revision
    if revision_hash != revision.content_hash:
        raise Conflict(
            "The post changed since you opened it; reload to review the current revision."
        )
    before = _move(post, _OUTCOME_TRANSITIONS[outcome], by)
    decision = Decision.objects.create(
        post=post,
        revision=revision,
        reviewer=by,
        outcome=outcome,
        reason=reason,
        content_hash=revision.content_hash,
    )
    ledger.append(
        f"post.{post.state}",
        actor=by,
        post=post,
        decision=decision.pk,
        outcome=outcome,
        reason=reason,
        revision=revision.number,
        content_hash=revision.content_hash,
        **{"from": before, "to": post.state},
    )
    if post.state == State.APPROVED and post.is_due():
        transaction.on_commit(lambda: publishing.enqueue_release(post.pk))
    return decision


@transaction.atomic
def release(post_id):
    """Hand an approved, due post to its connectors; expire it if its approval lapsed."""
    post = _lock(post_id)
    if post.state != State.APPROVED:
        return post
    if post.approval_lapsed():
        before = _move(post, "expire", None)
        ledger.append("post.expired", post=post, **{"from": before, "to": post.state})
        return post
    if not post.is_due():
        return post
    before = _move(post, "release", None)
    publications = publishing.create_publications(post)
    ledger.append(
        "post.released",
        post=post,
        revision=post.approved_revision.number,
        content_hash=post.approved_revision.content_hash,
        publications=[p.pk for p in publications],
        **{"from": before, "to": post.state},
    )
    transaction.on_commit(lambda: publishing.enqueue_deliveries(publications))
    return post


@transaction.atomic
def settle(post_id):
    """After a delivery: published when all are delivered, failed when one failed for good."""
    post = _lock(post_id)
    if post.state != State.PUBLISHING:
        return post
    outcome = publishing.outcome(post)
    if outcome is None:
        return post
    before = _move(post, "mark_published" if outcome == "delivered" else "mark_failed", None)
    ledger.append(f"post.{post.state}", post=post, **{"from": before, "to": post.state})
    return post


@transaction.atomic
def retry(post_id, by):
    post = _lock(post_id)
    before = _move(post, "retry", by)
    publications = publishing.reset_failed(post)
    ledger.append(
        "post.retried",
        actor=by,
        post=post,
        publications=[p.pk for p in publications],
        **{"from": before, "to": post.state},
    )
    transaction.on_commit(lambda: publishing.enqueue_deliveries(publications))
    return post


def due_post_ids(now=None):
    """Approved posts whose publish time has come, or whose approval has lapsed."""
    now = now or timezone.now()
    due = Q(publish_at__isnull=True) | Q(publish_at__lte=now) | Q(approval_expires_at__lte=now)
    return list(Post.objects.filter(due, state=State.APPROVED).values_list("pk", flat=True))
