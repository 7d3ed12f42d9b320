"""The only code that moves a Post between states.

Each function validates and locks the post row first, then changes data and writes its ledger
entries and its notifications (an outbox) in the same transaction, then schedules side effects
with transaction.on_commit. The ledger entries of an action are written together as its
transaction ends (`_transaction`, `ledger.batch`).
"""

from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    Prefetch,
    Q,
    Subquery,
    prefetch_related_objects,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_fsm import ConcurrentTransition, can_proceed, has_transition_perm

from . import config, duetime, ledger, media, notify, policy, publishing, routing
from .access import approvals_on_step, claims_of, read_claims, step_has_claims, user_groups
from .models import (
    Decision,
    Post,
    Publication,
    ReviewStep,
    Revision,
    RevisionFinding,
    SocialAccount,
    StepClaim,
    Tag,
)
from .models.accounts import team_id_of
from .models.posts import (
    EDITABLE_STATES,
    State,
    content_hash,
    knows_review_grant,
    may_decide,
    may_retry,
    review_grant,
)
from .prepared import prepared
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


def _transaction(action):
    """A workflow action: one transaction, whose ledger entries are written together as it
    ends (one statement on PostgreSQL: see ledger.batch)."""

    @wraps(action)
    def atomic_action(*args, **kwargs):
        with transaction.atomic(), ledger.batch():
            return action(*args, **kwargs)

    return atomic_action


_RELATED = ("current_revision", "approved_revision", "team", "author")


@prepared
def _locked(related, reviewer_is_superuser, *, post_id, reviewer_id):
    """The post, its row locked, `related` read along and, with a reviewer, their grant."""
    posts = Post.objects.select_for_update(of=("self",)).select_related(*related)
    if reviewer_id is not None:
        # The grant reads only these two of the reviewer.
        reviewer = get_user_model()(pk=reviewer_id, is_superuser=reviewer_is_superuser)
        posts = posts.annotate(review_granted=review_grant(reviewer))
    return posts.filter(pk=post_id)


def _lock(post_id, related=_RELATED, reviewer=None):
    """The post, its row locked until commit, with `related` read along (what most moves read)
    and, given a `reviewer`, whether they are granted review on its team (see may_decide)."""
    superuser = reviewer is not None and reviewer.is_superuser
    reviewer_id = None if reviewer is None else reviewer.pk  # None: no grant read
    try:
        post = _locked(related, superuser, post_id=int(post_id), reviewer_id=reviewer_id).get()
    except Post.DoesNotExist:
        raise WorkflowError("This post does not exist.") from None
    if reviewer is not None:
        knows_review_grant(post, reviewer, post.review_granted)
    return post


def _move(post, transition_name, user, unmet=None, *, save=True):
    """Run one named transition after checking its permission and conditions.

    `save=False` when another move follows in the same transaction and saves both.
    """
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
    if not save:
        return before
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
    image: object = None  # a new upload, or the name of the image the revision keeps
    image_sha256: str = ""

    @property
    def hash(self):
        return content_hash(
            self.text,
            self.link,
            [a.pk for a in self.accounts],
            [t.pk for t in self.tags],
            self.image_sha256,
        )


KEEP = object()  # edit_post(image=KEEP): the new revision keeps the current image


@prepared
def _usable(*, team_id, user_id, account_ids):
    """Those of the accounts the team's author may publish to."""
    return SocialAccount.objects.usable_in(team_id, user_id).filter(pk__in=account_ids)


@prepared
def _tags(*, ids):
    return Tag.objects.filter(pk__in=ids)


def _validate_content(author, text, link, account_ids, tag_ids, image=None, current=None):
    text = clean_text(text or "").strip()
    link = (link or "").strip()
    errors = {}
    max_length = settings.REVIEWFLOW["MAX_POST_LENGTH"]
    if not text:
        errors["text"] = "Write the text of the post."
    elif len(text) > max_length:
        errors["text"] = f"The text is {len(text)} characters long; the maximum is {max_length}."
    account_ids, tag_ids = tuple(map(int, account_ids)), tuple(map(int, tag_ids))
    team_id = team_id_of(author)
    accounts = (  # as SocialAccount.objects.usable_by(author)
        _usable(team_id=team_id, user_id=author.pk, account_ids=account_ids).all()
        if team_id is not None
        else []
    )
    if not account_ids:
        errors["accounts"] = "Choose at least one account to publish to."
    elif len(accounts) != len(set(account_ids)):
        errors["accounts"] = "One of the chosen accounts is not one you may publish to."
    tags = _tags(ids=tag_ids).all()
    if len(tags) != len(set(tag_ids)):
        errors["tags"] = "One of the chosen tags does not exist."
    image_name, image_sha256 = None, ""
    if image is KEEP:
        if current is not None and current.image:
            image_name, image_sha256 = current.image.name, current.image_sha256
    elif image is not None:
        try:
            image_sha256 = media.check_image(image)
            image_name = image
        except ValueError as error:
            errors["image"] = str(error)
    if errors:
        raise ContentError(errors)
    return Content(text, link, accounts, tags, image_name, image_sha256)


class ContentError(WorkflowError):
    """Invalid content, with one message per form field."""

    def __init__(self, errors):
        super().__init__(" ".join(errors.values()))
        self.errors = errors


def _new_revision(post, author, content):
    """The post's next revision, written from `content`, holding its accounts and tags: reading
    them back in this transaction would return the same rows."""
    number = (post.current_revision.number + 1) if post.current_revision_id else 1
    revision = Revision.objects.create(
        post=post,
        number=number,
        text=content.text,
        link=content.link,
        content_hash=content.hash,
        created_by=author,
        image_sha256=content.image_sha256,
        # A kept image is the same file: revisions are immutable, so they can share it.
        image=content.image if isinstance(content.image, str) else "",
    )
    if content.image is not None and not isinstance(content.image, str):
        # Saved under a name derived from its hash; the row is immutable, so set it in place.
        name = media.store_image(content.image, content.image_sha256)
        Revision.objects.filter(pk=revision.pk).update(image=name)
        revision.image.name = name
    # A new revision has no accounts or tags yet: add them (set() would read them first).
    revision.accounts.add(*content.accounts)
    if content.tags:
        revision.tags.add(*content.tags)
    _as_prefetched(revision, accounts=content.accounts, tags=content.tags)
    return revision


def _as_prefetched(instance, **related):
    """Hold these related objects as if prefetch_related had read them."""
    cache = instance.__dict__.setdefault("_prefetched_objects_cache", {})
    for name, objects in related.items():
        queryset = getattr(instance, name).all()
        queryset._result_cache, queryset._prefetch_done = list(objects), True
        cache[name] = queryset


def _content_of(revision):
    return Content(
        revision.text,
        revision.link,
        list(revision.accounts.all()),
        list(revision.tags.all()),
        revision.image.name if revision.image else None,
        revision.image_sha256,
    )


def _revision_summary(revision):
    """What the ledger records of a revision."""
    accounts, tags = revision.accounts.all(), revision.tags.all()
    return {
        "revision": revision.number,
        "content_hash": revision.content_hash,
        "text": revision.text,
        "link": revision.link,
        "accounts": sorted(a.pk for a in accounts),
        "tags": sorted(t.name for t in tags),
        "image_sha256": revision.image_sha256,
    }


@_transaction
def create_post(
    author,
    *,
    text,
    link="",
    account_ids=(),
    tag_ids=(),
    publish_at=None,
    image=None,
    submit=False,
    comment="",
):
    """Draft a post; with `submit`, send it to review in the same transaction, with the
    `comment` for the reviewers: if it cannot go (a blocking finding, no route), nothing is
    saved."""
    membership = getattr(author, "membership", None)
    if membership is None:
        raise NotAllowed("Only advisors who belong to a team can draft posts.")
    content = _validate_content(author, text, link, account_ids, tag_ids, image)
    # The team is read along with the request's user (access.UserWithTeamBackend); the route
    # reads its name.
    post = Post.objects.create(team=membership.team, author=author, publish_at=publish_at)
    post.current_revision = _new_revision(post, author, content)
    if not submit:  # else the submit's move saves the post, this pointer with it
        post.save(update_fields=["current_revision"])
    ledger.append(
        "post.created",
        actor=author,
        post=post,
        publish_at=publish_at.isoformat() if publish_at else None,
        **_revision_summary(post.current_revision),
    )
    if submit:
        _submit(post, author, comment, fresh=True)
    return post


@_transaction
def edit_post(
    post_id,
    by,
    *,
    text,
    link="",
    account_ids=(),
    tag_ids=(),
    publish_at=None,
    image=KEEP,
    submit=False,
    comment="",
):
    """Save new content. Editing approved content voids the approval and resubmits it.

    `image`: KEEP the current one, None to remove it, or a new upload. `submit`, `comment`: then
    send the post to review, in the same transaction (as `create_post`).
    """
    post = _lock(post_id)
    if by.pk != post.author_id:
        raise NotAllowed("Only the author can edit this post.")
    if post.state not in EDITABLE_STATES:
        raise not_editable(post)
    content = _validate_content(
        by, text, link, account_ids, tag_ids, image, current=post.current_revision
    )
    changed = content.hash != post.current_revision.content_hash
    if changed or publish_at != post.publish_at:
        _save_edit(post, by, content if changed else None, publish_at)
    # New content on an approved post has voided the approval and resubmitted it already.
    if submit and post.state != State.IN_REVIEW:
        _submit(post, by, comment, fresh=changed)
    return post


def _save_edit(post, by, content, publish_at):
    """Save the new schedule and, given `content`, a new revision written from it."""
    changed = content is not None
    schedule_changed = publish_at != post.publish_at
    if schedule_changed and not changed and post.state == State.APPROVED:
        _check_schedule_within_approval(post, publish_at)
    post.publish_at = publish_at
    if schedule_changed:
        post.publish_at_risk_since = None
    if changed:
        post.current_revision = _new_revision(post, by, content)
    if changed and post.state == State.APPROVED:
        route = _route(post)
        publishing.cancel_publications(post)  # the outbox of the voided approval
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
        if post.state == State.APPROVED:  # rescheduled: the approval and its outbox stay
            publishing.reschedule_publications(post)
            _release_if_due(post)


RELEASED_STATES = (
    State.PUBLISHING,
    State.PUBLISHED,
    State.PARTIALLY_PUBLISHED,
    State.FAILED,
    State.RETRACTED,
)


def not_editable(post):
    """The refusal to edit (or reschedule) a post in a state that does not allow it."""
    if post.state in RELEASED_STATES:
        return Conflict(
            f"This post was released for publishing and is now "
            f"{post.get_state_display().lower()}: it can no longer be edited or rescheduled. "
            "To take it down, retract it."
        )
    return Conflict(f"A post that is {post.get_state_display().lower()} cannot be edited.")


def _check_schedule_within_approval(post, publish_at):
    expires = post.approval_expires_at
    if publish_at is not None and expires is not None and publish_at > expires:
        local = timezone.localtime(expires)
        raise ContentError(
            {
                "publish_at": f"The approval is valid until {local:%d %b %Y %H:%M %Z}; "
                "choose an earlier time, or the post would expire unpublished."
            }
        )


class Blocked(WorkflowError):
    """The automated checks found something that must be fixed before review."""

    def __init__(self, findings):
        problems = "; ".join(f.message for f in findings)
        super().__init__(f"Fix this before submitting: {problems}")
        self.findings = findings


def _route(post, fresh=False):
    """Check and freeze the current revision's findings, then compute its route.

    A `block` finding refuses the move; a missing route is a Conflict saying why. `fresh`: the
    revision was written in this transaction, so it has no findings yet.
    """
    revision = post.current_revision
    with config.using():  # the checks and the route read the configuration's version once
        findings = None  # already checked and frozen: routing reads them
        if fresh or not revision.findings.exists():
            findings = policy.check_revision(revision)
            if blocked := policy.blocking(findings):
                raise Blocked(blocked)
            RevisionFinding.objects.bulk_create(
                RevisionFinding(
                    revision=revision,
                    code=f.code,
                    category=f.category,
                    severity=f.severity,
                    message=f.message,
                    fix=f.fix,
                    start=f.start,
                    end=f.end,
                    network=f.network,
                )
                for f in findings
            )
        try:
            return routing.route_for_revision(revision, findings=findings)
        except routing.NoRoute as error:
            raise Conflict(str(error)) from None


def _enter_review(post, route, by, event, **payload):
    """Freeze the route of the current revision and open its first stage (or approve at once)."""
    revision = post.current_revision
    if post.publish_at_risk_since is not None:
        post.publish_at_risk_since = None  # a new route: judged again by flag_publish_at_risk
        post.save(update_fields=["publish_at_risk_since"])
    opened = routing.freeze(post, revision, route)
    summary = {"revision": revision.number, "content_hash": revision.content_hash}
    ledger.append(event, actor=by, post=post, route=route.as_json(), **{**summary, **payload})
    if route.exempted_by is not None:
        before = _move(post, "approve", None, save=not post.is_due())  # see _count_approval
        publications = publishing.create_publications(post)
        ledger.append(
            "post.approved",
            post=post,
            exempted_by=route.exempted_by.name,
            revision=revision.number,
            content_hash=revision.content_hash,
            publications=[p.pk for p in publications],
            **{"from": before, "to": post.state},
        )
        _release_if_due(post, publications)
    elif opened:
        notify.steps_opened(post, opened)


@_transaction
def submit(post_id, by, *, comment=""):
    post = _lock(post_id)
    if by.pk != post.author_id:
        raise NotAllowed("Only the author can submit this post.")
    _submit(post, by, comment)
    return post


def _submit(post, by, comment="", fresh=False):
    """Send the locked post's current revision to review. `fresh`: that revision was written in
    this transaction, so it has no review steps or findings yet."""
    revision = post.current_revision
    if (
        not fresh
        and post.state in (State.CHANGES_REQUESTED, State.EXPIRED)
        and post.steps.filter(revision_id=revision.pk).exists()
    ):
        if post.state == State.CHANGES_REQUESTED:
            raise Conflict(
                f"Reviewers asked for changes to revision {revision.number}: "
                "edit the post before submitting it again."
            )
        # The approval lapsed: the same content goes through review again, as a new revision.
        post.current_revision = revision = _new_revision(post, by, _content_of(revision))
        post.save(update_fields=["current_revision"])
        fresh = True
    # The revision is immutable and the post locked: its accounts and tags are read once (none
    # when it was just written), for the policy checks, the route and the transition's condition.
    revision.post = post
    prefetch_related_objects([revision], "accounts", "tags")
    submittable = (State.DRAFT, State.CHANGES_REQUESTED, State.EXPIRED)
    route = _route(post, fresh=fresh) if post.state in submittable else None
    before = _move(post, "submit", by, unmet="Choose at least one account before submitting.")
    _enter_review(
        post,
        route,
        by,
        "post.submitted",
        comment=clean_text(comment).strip(),
        **{"from": before, "to": State.IN_REVIEW},
    )


def _close_open_steps(post, state=ReviewStep.State.CANCELLED):
    now = timezone.now()
    post.steps.filter(state__in=[ReviewStep.State.WAITING, ReviewStep.State.ACTIVE]).update(
        state=state, completed_at=now
    )
    StepClaim.objects.filter(step__post=post).delete()


@_transaction
def withdraw(post_id, by, *, reason=""):
    post = _lock(post_id)
    before = _move(post, "withdraw", by)
    _close_open_steps(post)
    publishing.cancel_publications(post)  # cancelled before release: nothing left
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
    return [step for step in _open_steps_for(post, user) if step.is_active and step.in_my_groups]


@prepared
def _open_steps_of(*, post_id, revision_id, user_id):
    my_groups = user_groups(get_user_model()(pk=user_id))
    return (
        ReviewStep.objects.filter(
            post_id=post_id,
            revision_id=revision_id,
            state__in=[ReviewStep.State.WAITING, ReviewStep.State.ACTIVE],
        )
        .select_related("group", "escalation_group")
        .annotate(
            approval_count=Coalesce(Subquery(approvals_on_step()), 0),
            has_claims=step_has_claims(),
            in_my_groups=Q(group_id__in=my_groups)
            | Q(escalated_at__isnull=False, escalation_group_id__in=my_groups),
            decided_by_me=Exists(Decision.objects.filter(step=OuterRef("pk"), reviewer=user_id)),
            approved_by_me=Exists(
                Decision.objects.filter(
                    revision_id=OuterRef("revision_id"),
                    reviewer=user_id,
                    outcome=Decision.Outcome.APPROVE,
                )
            ),
        )
        .order_by("stage", "pk")
    )


def _open_steps_for(post, user):
    """The waiting and active steps of the current revision, with what the checks below read
    about `user`: one query whatever the number of steps, approvals and claims (the claims are
    read only when a step has some). Read under the post's lock, so they hold for the move."""
    steps = _open_steps_of(
        post_id=post.pk, revision_id=post.current_revision_id, user_id=user.pk
    ).all()
    for step in steps:
        step.post = post  # the locked instance, as post.steps would give it
    read_claims(steps)
    return steps


def _decision_options(post, by, step_id=None):
    """(the steps `by` may decide on now, best first; the refusal when there is none; the open
    steps of the revision).

    Every segregation-of-duties check of a decision or a claim, in one place: `_pick_step`
    raises the refusal, `decision_refusal` and the post page show it.
    """
    if by.pk == post.author_id:
        return [], NotAllowed("You cannot decide on your own post."), []
    if post.state != State.IN_REVIEW:
        return (
            [],
            Conflict(f"This post is {post.get_state_display().lower()}, not in review."),
            [],
        )
    if not may_decide(post, by):
        return [], NotAllowed("You are not allowed to do this on this post."), []
    steps = _open_steps_for(post, by)
    active = [step for step in steps if step.is_active]
    mine = [step for step in active if step.in_my_groups]
    if step_id is not None:
        mine = [step for step in mine if step.pk == step_id]
    if not mine:
        return [], NotAllowed(_not_waiting_for(active, step_id)), steps
    free, refusals, claimed = [], [], []
    for step in mine:
        if step.decided_by_me:
            refusals.append(Conflict("You already decided on this step."))
        elif step.approved_by_me and not step.allow_multiple_steps_per_reviewer:
            refusals.append(
                NotAllowed(
                    "You already approved another step of this revision; "
                    "a different reviewer must approve this one."
                )
            )
        elif (holder := _claimed_by_others(step, by)) is not None:
            claimed.append(
                Conflict(
                    f"In review by {holder.reviewer.get_username()} since "
                    f"{timezone.localtime(holder.claimed_at):%H:%M}; you can read it, "
                    "and decide once their claim lapses or is released."
                )
            )
        else:
            free.append(step)
    if free:
        return free, None, steps
    # A claim is the refusal that passes: say it first, so the reviewer knows to come back.
    return [], (claimed or refusals)[0], steps


def _not_waiting_for(active, step_id):
    if step_id is not None or not active:
        return "No step of this review is waiting for you."
    names = sorted({step.group.name for step in active})
    groups = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    that = "those groups" if len(names) > 1 else "that group"
    return f"This post waits for {groups}; you are not in {that}."


def decision_options(post, user):
    """(the steps `user` may decide on or claim now, None), or ([], why they cannot)."""
    steps, refusal, _ = _decision_options(post, user)
    return steps, (refusal.message if refusal else None)


def decision_refusal(post, user, step_id=None):
    """Why `user` cannot decide on `post` now, or None: what `_pick_step` would raise."""
    refusal = _decision_options(post, user, step_id)[1]
    return refusal.message if refusal else None


def _pick_step(post, by, step_id):
    """(the step this decision counts for, after every segregation-of-duties check; the open
    steps of the revision, as `_open_steps_for` read them)."""
    steps, refusal, open_steps = _decision_options(post, by, step_id)
    if refusal is not None:
        raise refusal
    return steps[0], open_steps


def _claimed_by_others(step, user):
    """The live claim that leaves no approval free for `user`, or None."""
    claims = claims_of(step)
    live = [claim for claim in claims if claim.is_live]
    if not live or any(claim.reviewer_id == user.pk for claim in claims):
        return None
    return live[0] if step.approval_count + len(live) >= step.quorum else None


@_transaction
def decide(post_id, by, *, outcome, revision_hash, reason="", step_id=None):
    """A reviewer's decision on one step of the revision whose hash their screen showed."""
    if outcome not in _OUTCOME_TRANSITIONS:
        raise WorkflowError("Unknown decision.")
    reason = clean_text(reason or "").strip()
    if outcome != Decision.Outcome.APPROVE and not reason:
        raise ContentError({"reason": "Say why, so the author knows what to change."})
    post = _lock(post_id, reviewer=by)
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
    # _pick_step checks may_decide (and refuses with the same message).
    step, open_steps = _pick_step(post, by, step_id)
    step.revision = revision  # an active step of the current revision: the one read above
    decision = Decision.objects.create(
        post=post,
        step=step,
        revision=revision,
        reviewer=by,
        outcome=outcome,
        reason=reason,
        content_hash=revision.content_hash,
    )
    # The step's claims were read under the post's lock (_open_steps_for): none, none to delete.
    if any(claim.reviewer_id == by.pk for claim in claims_of(step)):
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
        _count_approval(post, step, decision, open_steps)
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
    decision.step, decision.reviewer = step, by
    notify.decision_made(post, decision)
    return decision


def _count_approval(post, step, decision, open_steps):
    """Close the step at its quorum of distinct reviewers; open the next stage or approve.

    `open_steps`: the revision's waiting and active steps, read under the post's lock with
    their approvals before this one (a reviewer decides a step once: distinct people).
    """
    if step.approval_count + 1 < step.quorum:
        return
    step.state, step.completed_at = ReviewStep.State.APPROVED, timezone.now()
    step.save(update_fields=["state", "completed_at"])
    if step.has_claims:
        StepClaim.objects.filter(step=step).delete()
    still_open = [other for other in open_steps if other.pk != step.pk]
    if any(other.is_active and other.stage == step.stage for other in still_open):
        return
    if still_open:
        opened = routing.activate_next_stage(step.revision)
        ledger.append(
            "route.stage_opened",
            post=post,
            stage=opened[0].stage,
            steps=[s.pk for s in opened],
        )
        notify.steps_opened(post, opened)
        return
    # Due at once, the post is released (or, its approval lapsed already, expired) below, in
    # this transaction: that move's write saves both.
    before = _move(post, "approve", decision.reviewer, save=not post.is_due())
    publications = publishing.create_publications(post)
    ledger.append(
        "post.approved",
        actor=decision.reviewer,
        post=post,
        decision=decision.pk,
        revision=step.revision.number,
        content_hash=step.revision.content_hash,
        publications=[p.pk for p in publications],
        **{"from": before, "to": post.state},
    )
    _release_if_due(post, publications)


def _release_if_due(post, publications=None):
    """An approved post with no publish time, or one already passed, is released in the
    approval's transaction; the beat releases the others when their time comes.
    `publications`: the outbox the approval has just written."""
    if post.state == State.APPROVED and post.is_due():
        _release(post, publications)


@_transaction
def claim(post_id, by, *, step_id=None):
    """Take one of the approvals a step still needs, so others see who is on it."""
    post = _lock(post_id, reviewer=by)
    if by.pk == post.author_id or not may_decide(post, by):
        raise NotAllowed("You cannot take this post for review.")
    if post.state != State.IN_REVIEW:
        # As for a decision: someone else was first, or the author moved it; a stale page.
        raise Conflict(f"This post is {post.get_state_display().lower()}, not in review.")
    step, _ = _pick_step(post, by, step_id)
    StepClaim.objects.filter(step=step, reviewer=by).delete()
    StepClaim.objects.filter(step=step, claimed_at__lt=timezone.now() - _claim_lapse()).delete()
    claim = StepClaim.objects.create(step=step, reviewer=by)
    ledger.append("step.claimed", actor=by, post=post, step=step.pk, group=step.group.name)
    return claim


@_transaction
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


@_transaction
def release(post_id):
    """The beat's release of an approved post whose publish time has come; expire it if its
    approval lapsed. (A post due at once is released in the approval's own transaction.)

    The publications were written with the approval; this moves the post to publishing and
    enqueues their delivery on commit (the beat sends again any message that gets lost).
    """
    post = _lock(post_id)
    if post.state == State.APPROVED:
        _release(post)
    return post


def _release(post, publications=None):
    """`publications`: the post's outbox when the caller has it in hand (else it is read)."""
    if post.approval_lapsed():
        before = _move(post, "expire", None)
        cancelled = publishing.cancel_publications(post)
        ledger.append(
            "post.expired",
            post=post,
            approval_expires_at=post.approval_expires_at.isoformat(),
            publications_cancelled=cancelled,
            **{"from": before, "to": post.state},
        )
        return
    if not post.is_due():
        return
    before = _move(post, "release", None)
    if publications is None:  # the beat's release: the outbox is re-made if rows went missing
        publications = publishing.create_publications(post)
    publications = publishing.start_deliveries(post, publications)
    ledger.append(
        "post.released",
        post=post,
        revision=post.approved_revision.number,
        content_hash=post.approved_revision.content_hash,
        publications=publications,
        **{"from": before, "to": post.state},
    )
    transaction.on_commit(lambda: publishing.enqueue_deliveries(publications))


_SETTLE_TRANSITIONS = {
    State.PUBLISHED: "mark_published",
    State.PARTIALLY_PUBLISHED: "mark_partially_published",
    State.FAILED: "mark_failed",
}


@prepared
def _publication_counts(*, post_id):
    """(state, how many) of the post's publications."""
    return (
        Publication.objects.filter(post_id=post_id)
        .order_by()
        .values_list("state")
        .annotate(n=Count("pk"))
    )


@_transaction
def settle(post_id, record=None):
    """After a delivery: published when all are delivered, partially published when some are
    and the others failed for good, failed when none is.

    `record()`, when given, first writes the attempt's outcome (the delivery engine's), in this
    transaction and under the post's lock: the order every move locks in, the post then its
    publications.
    """
    post = _lock(post_id, related=())  # reads only the post and its publications
    if record is not None:
        record()
    if post.state != State.PUBLISHING:
        return post
    counts = dict(_publication_counts(post_id=post.pk).all())
    outcome = publishing.outcome(counts)
    if outcome is None:
        return post
    before = _move(post, _SETTLE_TRANSITIONS[outcome], None)
    ledger.append(
        f"post.{post.state}",
        post=post,
        delivered=counts.get(Publication.State.DELIVERED, 0),
        failed=counts.get(Publication.State.FAILED, 0),
        **{"from": before, "to": post.state},
    )
    return post


@_transaction
def retry(post_id, by):
    """Publish again what failed, and only that: delivered publications stay as they are."""
    post = _lock(post_id)
    before = _move(post, "retry", by)
    publications = publishing.reset_failed(post)
    ledger.append(
        "post.retried",
        actor=by,
        post=post,
        publications=publications,
        **{"from": before, "to": post.state},
    )
    transaction.on_commit(lambda: publishing.enqueue_deliveries(publications))
    return post


def due_post_ids(now=None):
    """Approved posts whose publish time has come, or whose approval has lapsed."""
    now = now or timezone.now()
    due = Q(publish_at__isnull=True) | Q(publish_at__lte=now) | Q(approval_expires_at__lte=now)
    return list(Post.objects.filter(due, state=State.APPROVED).values_list("pk", flat=True))


# --- Due times: escalation of overdue steps, publish times at risk ------------------------------


def escalate_overdue(now=None):
    """Mark active steps past their due time as overdue and add their escalation group.

    Beat runs this every minute. Each post is handled in its own transaction, under its row
    lock; a step is escalated once (conditional update on escalated_at). Returns the step ids.
    """
    now = now or timezone.now()
    overdue = ReviewStep.objects.filter(
        state=ReviewStep.State.ACTIVE, due_at__lte=now, escalated_at__isnull=True
    ).values_list("post_id", "pk")
    by_post = {}
    for post_id, step_id in overdue:
        by_post.setdefault(post_id, []).append(step_id)
    escalated = []
    for post_id, step_ids in by_post.items():
        escalated += _escalate(post_id, step_ids, now)
    return escalated


@_transaction
def _escalate(post_id, step_ids, now):
    post = _lock(post_id)
    if post.state != State.IN_REVIEW:
        return []
    steps = ReviewStep.objects.filter(
        pk__in=step_ids,
        post=post,
        state=ReviewStep.State.ACTIVE,
        due_at__lte=now,
        escalated_at__isnull=True,
    ).select_related("group", "escalation_group")
    escalated = []
    for step in steps:
        if not ReviewStep.objects.filter(pk=step.pk, escalated_at__isnull=True).update(
            escalated_at=now
        ):
            continue
        ledger.append(
            "step.overdue",
            post=post,
            step=step.pk,
            group=step.group.name,
            due_at=step.due_at.isoformat(),
            escalated_to=step.escalation_group.name if step.escalation_group else None,
        )
        escalated.append(step.pk)
    for step_id in escalated:
        notify.step_escalated(step_id)
    return escalated


def _open_steps():
    return Prefetch(
        "steps",
        queryset=ReviewStep.objects.filter(
            state__in=[ReviewStep.State.WAITING, ReviewStep.State.ACTIVE]
        ),
        to_attr="open_steps",
    )


def estimated_finish(post, now=None):
    """The earliest time the open route of a post can finish if every step takes its due time.

    The active stage ends at the latest due time of its active steps (a step without one, or
    already overdue, could end now); each later stage then takes the longest due time of its
    steps, counted from the end of the one before (in business hours when a step says so).
    Uses `post.open_steps` when prefetched (see `_open_steps`).
    """
    now = now or timezone.now()
    steps = getattr(post, "open_steps", None)
    if steps is None:
        steps = list(
            post.steps.filter(state__in=[ReviewStep.State.WAITING, ReviewStep.State.ACTIVE])
        )
    steps = [step for step in steps if step.revision_id == post.current_revision_id]
    active = [step for step in steps if step.state == ReviewStep.State.ACTIVE]
    finish = max([now, *(step.due_at for step in active if step.due_at is not None)])
    waiting = [step for step in steps if step.state == ReviewStep.State.WAITING]
    for stage in sorted({step.stage for step in waiting}):
        start = finish
        finish = max(
            [
                start,
                *(
                    duetime.due_at(start, step.due_hours, step.business_hours)
                    for step in waiting
                    if step.stage == stage and step.due_hours is not None
                ),
            ]
        )
    return finish


def _at_risk(post, now):
    """(at risk?, estimated finish) for a post in review with a publish time."""
    finish = estimated_finish(post, now)
    margin = timezone.timedelta(minutes=settings.REVIEWFLOW["AT_RISK_MARGIN_MINUTES"])
    return finish > post.publish_at or post.publish_at - now < margin, finish


def flag_publish_at_risk(now=None):
    """Flag posts in review whose publish time will pass before their route can finish.

    Flags before the slot is lost: when the estimated finish is after the publish time, or the
    publish time is less than AT_RISK_MARGIN_MINUTES away. A post is flagged once
    (publish_at_risk_since); the author and the active steps' reviewers are told. Nothing clears
    the flag yet: a post resubmitted or rescheduled after being flagged is not flagged again.
    Returns the ids of the posts flagged.
    """
    now = now or timezone.now()
    candidates = (
        Post.objects.filter(
            _could_be_at_risk(now),
            state=State.IN_REVIEW,
            publish_at__isnull=False,
            publish_at_risk_since__isnull=True,
        )
        # The state too: django-fsm reads it as each post is built, one query a post if deferred.
        .only("pk", "state", "publish_at", "current_revision_id")
        .prefetch_related(_open_steps())
        .order_by("pk")
    )
    at_risk = [post.pk for post in candidates.iterator(chunk_size=500) if _at_risk(post, now)[0]]
    return [post_id for post_id in at_risk if _flag_at_risk(post_id, now)]


def _could_be_at_risk(now):
    """The posts `_at_risk` may answer yes for, selected in SQL so that the sweep does not build
    every post in review: the slot is within the margin (or passed), an active step of the
    current revision is due after it, or a later stage is still to come (whose time only
    `estimated_finish` tells). Without a later stage that is exactly `_at_risk`."""
    margin = timezone.timedelta(minutes=settings.REVIEWFLOW["AT_RISK_MARGIN_MINUTES"])
    steps = ReviewStep.objects.filter(post=OuterRef("pk"), revision=OuterRef("current_revision"))
    return (
        Q(publish_at__lt=max(now, now + margin))
        | Exists(steps.filter(state=ReviewStep.State.ACTIVE, due_at__gt=OuterRef("publish_at")))
        | Exists(steps.filter(state=ReviewStep.State.WAITING))
    )


@_transaction
def _flag_at_risk(post_id, now):
    post = _lock(post_id)
    if (
        post.state != State.IN_REVIEW
        or post.publish_at is None
        or post.publish_at_risk_since is not None
    ):
        return False
    risky, finish = _at_risk(post, now)
    if not risky:
        return False
    unflagged = Post.objects.filter(pk=post.pk, publish_at_risk_since__isnull=True)
    if not unflagged.update(publish_at_risk_since=now):
        return False
    active = post.steps.filter(
        revision_id=post.current_revision_id, state=ReviewStep.State.ACTIVE
    ).select_related("group")
    ledger.append(
        "post.publish_at_risk",
        post=post,
        publish_at=post.publish_at.isoformat(),
        estimated_finish=finish.isoformat(),
        margin_minutes=settings.REVIEWFLOW["AT_RISK_MARGIN_MINUTES"],
        steps=[{"step": step.pk, "group": step.group.name} for step in active],
    )
    notify.publish_at_risk(post.pk, estimated_finish=finish)
    return True


# --- Take-down and approval expiry ---------------------------------------------------------------


@_transaction
def retract(post_id, by, *, reason):
    """Take a post down from every network it went to: the author or a compliance admin.

    The post becomes retracted at once; each delivered publication is marked for deletion in
    the same transaction (an outbox) and deleted by `tasks.retract_publication` after the commit,
    never under this row lock. Each deletion, or its failure, is a ledger entry of its own.
    """
    post = _lock(post_id)
    before = _move(post, "retract", by)
    reason = clean_text(reason or "").strip()
    if not reason:
        raise ContentError({"reason": "Say why this post is taken down; the ledger keeps it."})
    publications = publishing.start_retractions(post)
    ledger.append(
        "post.retracted",
        actor=by,
        post=post,
        reason=reason,
        publications=publications,
        **{"from": before, "to": post.state},
    )
    transaction.on_commit(lambda: publishing.enqueue_retractions(publications))
    return post


@_transaction
def retry_retract(post_id, by):
    """Try again the deletions of a retracted post that failed."""
    post = _lock(post_id)
    if post.state != State.RETRACTED:
        raise Conflict(f"This post is {post.get_state_display().lower()}, not retracted.")
    if not may_retry(post, by):
        raise NotAllowed("Only the author or a compliance admin can retract this post.")
    publications = publishing.reset_failed_retractions(post)
    if not publications:
        raise Conflict("No removal of this post has failed: there is nothing to try again.")
    ledger.append("post.retract_retried", actor=by, post=post, publications=publications)
    transaction.on_commit(lambda: publishing.enqueue_retractions(publications))
    return post


def expiring_post_ids(now=None):
    """Approved posts not warned yet whose approval expires within EXPIRY_WARNING_DAYS and
    before their publish time (a post due before its approval expires needs no warning)."""
    now = now or timezone.now()
    horizon = now + timezone.timedelta(days=settings.REVIEWFLOW["EXPIRY_WARNING_DAYS"])
    return list(
        Post.objects.filter(
            Q(publish_at__isnull=True) | Q(publish_at__gte=F("approval_expires_at")),
            state=State.APPROVED,
            expiry_warned_at__isnull=True,
            approval_expires_at__gt=now,
            approval_expires_at__lte=horizon,
        )
        .order_by("approval_expires_at")
        .values_list("pk", flat=True)
    )


def warn_expiring(now=None):
    """The beat (hourly): tell authors whose approval expires before release. Returns post ids."""
    now = now or timezone.now()
    return [post_id for post_id in expiring_post_ids(now) if _warn_expiring(post_id, now)]


@_transaction
def _warn_expiring(post_id, now):
    post = _lock(post_id)
    if post.state != State.APPROVED or post.expiry_warned_at is not None:
        return False
    if not Post.objects.filter(pk=post.pk, expiry_warned_at__isnull=True).update(
        expiry_warned_at=now
    ):
        return False
    ledger.append(
        "post.approval_expiring",
        post=post,
        approval_expires_at=post.approval_expires_at.isoformat(),
        publish_at=post.publish_at.isoformat() if post.publish_at else None,
    )
    notify.approval_expiring(post.pk)
    return True
