"""The only code that moves a Post between states.

Each function validates and locks the post row first, then changes data and writes its ledger
entry in the same transaction, then schedules side effects with transaction.on_commit.
"""

from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransition, can_proceed, has_transition_perm

from . import ledger, notify, publishing, routing
from .models import Decision, Post, ReviewStep, Revision, SocialAccount, StepClaim, Tag
from .models.posts import EDITABLE_STATES, State, content_hash, may_decide
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


@dataclass(frozen=True)
class Content:
    text: str
    link: str
    accounts: list
    tags: list

    @property
    def hash(self):
        return content_hash(
            self.text, self.link, [a.pk for a in self.accounts], [t.pk for t in self.tags]
        )


def _validate_content(author, text, link, account_ids, tag_ids):
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
    tags = list(Tag.objects.filter(pk__in=tag_ids))
    if len(tags) != len(set(tag_ids)):
        errors["tags"] = "One of the chosen tags does not exist."
    if errors:
        raise ContentError(errors)
    return Content(text, link, accounts, tags)


class ContentError(WorkflowError):
    """Invalid content, with one message per form field."""

    def __init__(self, errors):
        super().__init__(" ".join(errors.values()))
        self.errors = errors


def _new_revision(post, author, content):
    number = (post.current_revision.number + 1) if post.current_revision_id else 1
    revision = Revision.objects.create(
        post=post,
        number=number,
        text=content.text,
        link=content.link,
        content_hash=content.hash,
        created_by=author,
    )
    revision.accounts.set(content.accounts)
    revision.tags.set(content.tags)
    return revision


def _revision_summary(revision):
    return {
        "revision": revision.number,
        "content_hash": revision.content_hash,
        "text": revision.text,
        "link": revision.link,
        "accounts": sorted(a.pk for a in revision.accounts.all()),
        "tags": sorted(t.name for t in revision.tags.all()),
    }


@transaction.atomic
def create_post(author, *, text, link="", account_ids=(), tag_ids=(), publish_at=None):
    membership = getattr(author, "membership", None)
    if membership is None:
        raise NotAllowed("Only advisors who belong to a team can draft posts.")
    content = _validate_content(author, text, link, account_ids, tag_ids)
    post = Post.objects.create(team_id=membership.team_id, author=author, publish_at=publish_at)
    post.current_revision = _new_revision(post, author, content)
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
def edit_post(post_id, by, *, text, link="", account_ids=(), tag_ids=(), publish_at=None):
    """Save new content. Editing approved content voids the approval and resubmits it."""
    post = _lock(post_id)
    if by.pk != post.author_id:
        raise NotAllowed("Only the author can edit this post.")
    if post.state not in EDITABLE_STATES:
        raise Conflict(f"A post that is {post.get_state_display().lower()} cannot be edited.")
    content = _validate_content(by, text, link, account_ids, tag_ids)
    changed = content.hash != post.current_revision.content_hash
    schedule_changed = publish_at != post.publish_at
    if not changed and not schedule_changed:
        return post
    post.publish_at = publish_at
    if changed:
        post.current_revision = _new_revision(post, by, content)
    if changed and post.state == State.APPROVED:
        route = _route(post)
        before = _move(post, "void_approval", by)
        _enter_review(
            post,
            route,
            by,
            "post.approval_voided",
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


def _route(post):
    """The route for the post's current revision, or a Conflict saying why there is none."""
    try:
        return routing.route_for_revision(post.current_revision)
    except routing.NoRoute as error:
        raise Conflict(str(error)) from None


def _enter_review(post, route, by, event, **payload):
    """Freeze the route of the current revision and open its first stage (or approve at once)."""
    revision = post.current_revision
    opened = routing.freeze(post, revision, route)
    summary = {"revision": revision.number, "content_hash": revision.content_hash}
    ledger.append(event, actor=by, post=post, route=route.as_json(), **{**summary, **payload})
    if route.exempted_by is not None:
        before = _move(post, "approve", None)
        ledger.append(
            "post.approved",
            post=post,
            exempted_by=route.exempted_by.name,
            revision=revision.number,
            content_hash=revision.content_hash,
            **{"from": before, "to": post.state},
        )
        _release_on_commit(post)
    elif opened:
        transaction.on_commit(lambda: notify.steps_opened([s.pk for s in opened]))


@transaction.atomic
def submit(post_id, by, *, comment=""):
    post = _lock(post_id)
    if by.pk != post.author_id:
        raise NotAllowed("Only the author can submit this post.")
    if post.state == State.CHANGES_REQUESTED and post.steps.filter(
        revision_id=post.current_revision_id
    ).exists():
        raise Conflict(
            f"Reviewers asked for changes to revision {post.current_revision.number}: "
            "edit the post before submitting it again."
        )
    route = _route(post) if post.state in (State.DRAFT, State.CHANGES_REQUESTED) else None
    before = _move(post, "submit", by, unmet="Choose at least one account before submitting.")
    _enter_review(
        post,
        route,
        by,
        "post.submitted",
        comment=clean_text(comment).strip(),
        **{"from": before, "to": State.IN_REVIEW},
    )
    return post


def _close_open_steps(post, state=ReviewStep.State.CANCELLED):
    now = timezone.now()
    post.steps.filter(
        state__in=[ReviewStep.State.WAITING, ReviewStep.State.ACTIVE]
    ).update(state=state, completed_at=now)
    StepClaim.objects.filter(step__post=post).delete()


@transaction.atomic
def withdraw(post_id, by, *, reason=""):
    post = _lock(post_id)
    before = _move(post, "withdraw", by)
    _close_open_steps(post)
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


def eligible_steps(post, user):
    """The active steps of the current revision this user may decide on, best first."""
    groups = set(user.groups.values_list("pk", flat=True))
    steps = post.steps.filter(
        revision_id=post.current_revision_id, state=ReviewStep.State.ACTIVE
    ).select_related("group")
    return [
        step
        for step in steps
        if step.group_id in groups
        or (step.escalated_at is not None and step.escalation_group_id in groups)
    ]


def _pick_step(post, by, step_id):
    """The step this decision counts for, after every segregation-of-duties check."""
    steps = eligible_steps(post, by)
    if step_id is not None:
        steps = [step for step in steps if step.pk == step_id]
    if not steps:
        raise NotAllowed("No step of this review is waiting for you.")
    decided = Decision.objects.filter(revision_id=post.current_revision_id, reviewer=by)
    decided_steps = set(decided.values_list("step_id", flat=True))
    approved_other = set(
        decided.filter(outcome=Decision.Outcome.APPROVE).values_list("step_id", flat=True)
    )
    refusal = None
    for step in steps:
        if step.pk in decided_steps:
            refusal = Conflict("You already decided on this step.")
        elif approved_other and not step.allow_multiple_steps_per_reviewer:
            refusal = NotAllowed(
                "You already approved another step of this revision; "
                "a different reviewer must approve this one."
            )
        elif (holder := _claimed_by_others(step, by)) is not None:
            refusal = Conflict(
                f"In review by {holder.reviewer.get_username()} since "
                f"{timezone.localtime(holder.claimed_at):%H:%M}; you can read it, "
                "and decide once their claim lapses or is released."
            )
        else:
            return step
    raise refusal


def _claimed_by_others(step, user):
    """The live claim that leaves no approval free for `user`, or None."""
    if step.claims.filter(reviewer=user).exists():
        return None
    approvals = step.decisions.filter(outcome=Decision.Outcome.APPROVE).count()
    live = [claim for claim in step.claims.select_related("reviewer") if claim.is_live]
    if approvals + len(live) >= step.quorum and live:
        return live[0]
    return None


@transaction.atomic
def decide(post_id, by, *, outcome, revision_hash, reason="", step_id=None):
    """A reviewer's decision on one step of the revision whose hash their screen showed."""
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
    if not may_decide(post, by):
        raise NotAllowed("You are not allowed to do this on this post.")
    step = _pick_step(post, by, step_id)
    decision = Decision.objects.create(
        post=post,
        step=step,
        revision=revision,
        reviewer=by,
        outcome=outcome,
        reason=reason,
        content_hash=revision.content_hash,
    )
    StepClaim.objects.filter(step=step, reviewer=by).delete()
    details = {
        "decision": decision.pk,
        "step": step.pk,
        "group": step.group.name,
        "reason": reason,
        "revision": revision.number,
        "content_hash": revision.content_hash,
    }
    if outcome == Decision.Outcome.APPROVE:
        ledger.append("decision.approve", actor=by, post=post, **details)
        _count_approval(post, step, decision)
    else:
        # Any rejection or request for changes ends this review: one entry says both.
        step.state = (
            ReviewStep.State.REJECTED
            if outcome == Decision.Outcome.REJECT
            else ReviewStep.State.CHANGES_REQUESTED
        )
        step.completed_at = timezone.now()
        step.save(update_fields=["state", "completed_at"])
        _close_open_steps(post)
        before = _move(post, _OUTCOME_TRANSITIONS[outcome], by)
        ledger.append(
            f"post.{post.state}",
            actor=by,
            post=post,
            **details,
            **{"from": before, "to": post.state},
        )
    transaction.on_commit(lambda: notify.decision_made(decision.pk))
    return decision


def _count_approval(post, step, decision):
    """Close the step at its quorum of distinct reviewers; open the next stage or approve."""
    approvers = step.decisions.filter(outcome=Decision.Outcome.APPROVE).values("reviewer")
    if approvers.distinct().count() < step.quorum:
        return
    step.state, step.completed_at = ReviewStep.State.APPROVED, timezone.now()
    step.save(update_fields=["state", "completed_at"])
    StepClaim.objects.filter(step=step).delete()
    open_in_stage = post.steps.filter(
        revision_id=step.revision_id, stage=step.stage, state=ReviewStep.State.ACTIVE
    )
    if open_in_stage.exists():
        return
    opened = routing.activate_next_stage(step.revision)
    if opened:
        ledger.append(
            "route.stage_opened",
            post=post,
            stage=opened[0].stage,
            steps=[s.pk for s in opened],
        )
        transaction.on_commit(lambda: notify.steps_opened([s.pk for s in opened]))
        return
    before = _move(post, "approve", decision.reviewer)
    ledger.append(
        "post.approved",
        actor=decision.reviewer,
        post=post,
        decision=decision.pk,
        revision=step.revision.number,
        content_hash=step.revision.content_hash,
        **{"from": before, "to": post.state},
    )
    _release_on_commit(post)


def _release_on_commit(post):
    if post.state == State.APPROVED and post.is_due():
        transaction.on_commit(lambda: publishing.enqueue_release(post.pk))


@transaction.atomic
def claim(post_id, by, *, step_id=None):
    """Take one of the approvals a step still needs, so others see who is on it."""
    post = _lock(post_id)
    if by.pk == post.author_id or not may_decide(post, by) or post.state != State.IN_REVIEW:
        raise NotAllowed("You cannot take this post for review.")
    step = _pick_step(post, by, step_id)
    StepClaim.objects.filter(step=step, reviewer=by).delete()
    StepClaim.objects.filter(step=step, claimed_at__lt=timezone.now() - _claim_lapse()).delete()
    claim = StepClaim.objects.create(step=step, reviewer=by)
    ledger.append("step.claimed", actor=by, post=post, step=step.pk, group=step.group.name)
    return claim


@transaction.atomic
def release_claim(post_id, by, *, claim_id):
    """The reviewer gives the step back, or a compliance admin releases someone's claim."""
    post = _lock(post_id)
    try:
        claim = StepClaim.objects.select_related("reviewer", "step").get(
            pk=claim_id, step__post=post
        )
    except StepClaim.DoesNotExist:
        raise Conflict("This claim has already been released.") from None
    if claim.reviewer_id != by.pk and not by.has_perm("approvals.oversee_posts"):
        raise NotAllowed("Only the reviewer or a compliance admin can release this claim.")
    claim.delete()
    ledger.append(
        "step.claim_released",
        actor=by,
        post=post,
        step=claim.step_id,
        reviewer=claim.reviewer.get_username(),
    )


def _claim_lapse():
    return timezone.timedelta(minutes=settings.REVIEWFLOW["CLAIM_MINUTES"])


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
