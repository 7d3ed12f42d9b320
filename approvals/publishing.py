"""The delivery engine: the outbox, the release gate, retries, the sweeper and take-downs.

Publications are the outbox. They are written pending in the transaction that approves a post
(due at its publish time); the release (`workflow._release`: in the approval's transaction when
the post is due at once, else by the beat when its time comes) moves the post to publishing and
enqueues their delivery on commit. The database is the source of truth, Celery messages only a
prompt: the beat task `deliver_due_publications` (`enqueue_due`) sends again any due publication
whose message is older than DELIVERY_RESEND_SECONDS, so a lost message (a broker restarted without
persistence, a broker down at commit) only delays a delivery. A duplicate message is harmless:
`claim` is a conditional update that one run wins.

One attempt per task run, whatever the network: a retryable DeliveryError puts the publication
back to pending with exponential backoff and full jitter (or the network's Retry-After when
longer); waits up to DELIVERY_COUNTDOWN_MAX_SECONDS are a Celery countdown, longer ones wait for
the beat (no long countdowns: Redis redelivers them unpredictably). After DELIVERY_MAX_ATTEMPTS,
or at once for a permanent error, the publication fails with the network's reason. No network
call happens inside a transaction or under a row lock.
"""

import logging
import random
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from . import health, ledger, ratelimit
from .connectors import DeliveryError, ReleasedContent, get_connector, released_ids
from .models import AccountCredential, DeliveryAttempt, Post, Publication, SocialAccount
from .models.posts import State
from .prepared import prepared

log = logging.getLogger(__name__)

P = Publication.State
BATCH = 5000  # publications the beat enqueues per run, oldest due first


def _config(name):
    return settings.REVIEWFLOW[name]


def _seconds(name):
    return timezone.timedelta(seconds=_config(name))


# --- The outbox -------------------------------------------------------------------------------


@prepared
def _targets(*, revision_id):
    """The revision's accounts, each with whether its publication was made already."""
    made = Publication.objects.filter(revision=revision_id, account=OuterRef("pk"))
    return SocialAccount.objects.filter(revisions=revision_id).annotate(made=Exists(made))


def create_publications(post, now=None):
    """One pending publication per target account of the approved revision (unique in the
    database), due at the publish time. Runs in the approval's transaction, under the post's
    lock; idempotent."""
    revision = post.approved_revision
    now = now or timezone.now()
    due = post.publish_at or now
    # Due now: the release in this same transaction sends their messages on commit.
    enqueued = now if due <= now else None
    accounts = _targets(revision_id=revision.pk).all()
    existing = (
        list(Publication.objects.filter(revision=revision))
        if any(account.made for account in accounts)
        else []
    )
    missing = [
        Publication(
            post=post, revision=revision, account=account, next_attempt_at=due, enqueued_at=enqueued
        )
        for account in accounts
        if not account.made
    ]
    return [*existing, *Publication.objects.bulk_create(missing)]


def cancel_publications(post):
    """Drop the outbox rows of an approval that will not be released (voided, withdrawn,
    expired). They never left: a publication is claimed only once its post is publishing."""
    return post.publications.filter(state=P.PENDING, attempts=0).delete()[0]


def reschedule_publications(post):
    """An approved post's publish time moved: its pending publications are due then."""
    return post.publications.filter(state=P.PENDING).update(
        next_attempt_at=post.publish_at or timezone.now(), enqueued_at=None
    )


def start_deliveries(post, publications=None, now=None):
    """At release: every pending publication of the post is due now; returns their ids.
    `publications`: the post's publications, when the caller has just read or written them."""
    now = now or timezone.now()
    if publications is None:
        ids = list(post.publications.filter(state=P.PENDING).values_list("pk", flat=True))
    else:
        pending = [publication for publication in publications if publication.state == P.PENDING]
        ids = [publication.pk for publication in pending]
        # Those the approval has just written due now are stamped already: no second write.
        if all(p.enqueued_at is not None and p.next_attempt_at <= now for p in pending):
            return ids
    Publication.objects.filter(pk__in=ids).update(next_attempt_at=now, enqueued_at=now)
    return ids


def enqueue_deliveries(publications, countdown=None):
    from .tasks import deliver_publication, send

    for publication in publications:
        send(deliver_publication, getattr(publication, "pk", publication), countdown=countdown)


def enqueue_retractions(publications, countdown=None):
    from .tasks import retract_publication, send

    for publication in publications:
        send(retract_publication, getattr(publication, "pk", publication), countdown=countdown)


def _due(now):
    return Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)


def enqueue_due(now=None):
    """The beat: (re)enqueue due deliveries of posts being published, and due take-downs, whose
    last message is older than DELIVERY_RESEND_SECONDS (or that never had one).

    Returns (delivery ids, take-down ids).
    """
    now = now or timezone.now()
    not_recent = Q(enqueued_at__isnull=True) | Q(
        enqueued_at__lt=now - _seconds("DELIVERY_RESEND_SECONDS")
    )
    publishing = Post.objects.filter(state=State.PUBLISHING).values("pk")
    deliveries = list(
        Publication.objects.filter(_due(now), not_recent, state=P.PENDING, post__in=publishing)
        .order_by(F("next_attempt_at").asc(nulls_first=True), "pk")
        .values_list("pk", flat=True)[:BATCH]
    )
    free = Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - _seconds("DELIVERY_LEASE_SECONDS"))
    takedowns = list(
        Publication.objects.filter(_due(now), not_recent, free, state=P.RETRACTING)
        .order_by("pk")
        .values_list("pk", flat=True)[:BATCH]
    )
    if deliveries or takedowns:
        Publication.objects.filter(pk__in=deliveries + takedowns).update(enqueued_at=now)
        enqueue_deliveries(deliveries)
        enqueue_retractions(takedowns)
    return deliveries, takedowns


# --- Delivery ---------------------------------------------------------------------------------


def gate(publication):
    """Why this publication may not leave, or None. Checked again in Connector.deliver."""
    post, revision = publication.post, publication.revision
    if post.state != State.PUBLISHING:
        return f"the post is {post.get_state_display().lower()}, not being published"
    if post.approved_revision_id != revision.pk or post.current_revision_id != revision.pk:
        return "this revision is not the approved one"
    if post.approval_expires_at is None or post.approval_expires_at <= timezone.now():
        return "the approval has expired"
    if not publication.account.validated:
        return "the account is not validated by compliance"
    return None


@prepared
def _claimable(*, pk, now):
    """The publication, if it is pending and due and its post is being published.

    The post's state is an EXISTS, not a join: with a join Django would move every condition
    into an `id IN (subquery)` that PostgreSQL does not re-check after waiting for a concurrent
    claim's row lock, and both claims would win."""
    releasing = Exists(Post.objects.filter(pk=OuterRef("post_id"), state=State.PUBLISHING))
    return Publication.objects.filter(_due(now), releasing, pk=pk, state=P.PENDING)


_ONE_MORE_ATTEMPT = F("attempts") + 1


def claim(publication_id, now=None):
    """Take a due, pending publication of a post being published; False when another worker or
    run has it, when it is not due yet, or when its post is not released."""
    now = now or timezone.now()
    # One conditional update; a post stays publishing until all its publications settle.
    claimed = _claimable(pk=int(publication_id), now=now).update(
        state=P.SENDING, claimed_at=now, attempts=_ONE_MORE_ATTEMPT
    )
    return bool(claimed)


@prepared
def _claimed(*, pk):
    """A publication as its delivery reads it, with its post, revision and account, and the
    revision's accounts and tags for the content's hash."""
    return (
        Publication.objects.select_related("post", "revision", "account", "post__approved_revision")
        .filter(pk=pk)
        .annotate(**released_ids(OuterRef("revision_id")))
    )


def deliver(publication_id, now=None):
    """One delivery attempt of one publication; returns True when this call delivered it."""
    from . import workflow

    if not claim(publication_id, now):
        return False
    publication = _claimed(pk=int(publication_id)).get()
    network = publication.account.network
    try:
        if refusal := gate(publication):
            raise DeliveryError(f"release gate: {refusal}", permanent=True)
        if (wait := ratelimit.acquire(network)) > 0:
            _put_back(publication, wait, now)
            return False
        ids = (publication.released_account_ids, publication.released_tag_ids)
        content = ReleasedContent.of(publication.revision, ids)
        delivered = get_connector(network).deliver(publication, content)
    except DeliveryError as error:
        record = partial(_failed, publication, error, now)
    except Exception as error:  # a connector bug or a crash: a visible, bounded retry
        log.exception("connector %s crashed", network)
        crash = DeliveryError(f"connector error: {error.__class__.__name__}")
        record = partial(_failed, publication, crash, now)
    else:
        record = partial(_finish, publication, ok=True, detail="", delivered=delivered)
    workflow.settle(publication.post_id, record=record)
    return publication.state == P.DELIVERED


def backoff_seconds(attempts, retry_after=None, rng=random):
    """The wait after `attempts` failed attempts: exponential, full jitter (0.5x to 1x), capped;
    the network's Retry-After when it asks for longer."""
    base = _config("DELIVERY_BACKOFF_SECONDS") * 2 ** max(0, attempts - 1)
    wait = min(base, _config("DELIVERY_BACKOFF_MAX_SECONDS")) * rng.uniform(0.5, 1.0)
    if retry_after is not None:
        wait = max(wait, float(retry_after))
    return wait


def _retry_plan(publication, error):
    """(final?, detail, wait seconds) after a failed attempt."""
    attempts, most = publication.attempts, _config("DELIVERY_MAX_ATTEMPTS")
    if error.permanent:
        return True, str(error), None
    if attempts >= most:
        return True, f"{error} (gave up after {attempts} attempts)", None
    return False, str(error), backoff_seconds(attempts, error.retry_after)


def _failed(publication, error, now=None):
    now = now or timezone.now()
    final, detail, wait = _retry_plan(publication, error)
    if error.reconnect:
        _needs_reconnect(publication.account_id, str(error), now)
    if final:
        _finish(publication, ok=False, detail=detail)
    else:
        _retry_later(publication, detail, wait, now)


@transaction.atomic
def _needs_reconnect(account_id, detail, now):
    """The network refused the credentials: "reconnect needed" for the admin and the owner (as
    the health check records it). Sandbox and webhook accounts have no credential."""
    credential = (
        AccountCredential.objects.select_for_update()
        .select_related("account")
        .filter(account_id=account_id)
        .first()
    )
    if credential is None:
        return
    reconnect = AccountCredential.Status.RECONNECT
    health.set_status(credential, credential.account, reconnect, detail, now, via="delivery")


def _mine(publication, state):
    """The publication row, only while this run's claim holds it."""
    return _held(pk=publication.pk, state=state, claimed_at=publication.claimed_at)


@prepared
def _held(*, pk, state, claimed_at):
    return Publication.objects.filter(pk=pk, state=state, claimed_at=claimed_at)


def _reschedule_changes(wait, now):
    """Fields that make a publication due in `wait` seconds, and the countdown to send it."""
    countdown = wait if wait <= _config("DELIVERY_COUNTDOWN_MAX_SECONDS") else None
    return {
        "claimed_at": None,
        "next_attempt_at": now + timezone.timedelta(seconds=wait),
        # With a countdown the message is on its way; otherwise the beat sends it when due.
        "enqueued_at": now if countdown is not None else None,
    }, countdown


@transaction.atomic
def _retry_later(publication, detail, wait, now):
    changes, countdown = _reschedule_changes(wait, now)
    changes.update(state=P.PENDING, error=detail)
    if not _mine(publication, P.SENDING).update(**changes):
        return
    for field, value in changes.items():
        setattr(publication, field, value)
    DeliveryAttempt.objects.create(publication=publication, ok=False, detail=detail)
    if countdown is not None:
        transaction.on_commit(lambda: enqueue_deliveries([publication.pk], countdown))


def _put_back(publication, wait, now=None):
    """No rate-limit token: pending again when one frees, the attempt not counted."""
    now = now or timezone.now()
    changes, countdown = _reschedule_changes(wait, now)
    state = publication.state
    changes.update(state=P.PENDING if state == P.SENDING else state)
    if _mine(publication, state).update(attempts=F("attempts") - 1, **changes):
        send = enqueue_deliveries if state == P.SENDING else enqueue_retractions
        if countdown is not None:
            transaction.on_commit(lambda: send([publication.pk], countdown))


def _finish(publication, *, ok, detail, delivered=None):
    """Record the attempt's outcome; runs inside `workflow.settle`, under the post's lock."""
    now = timezone.now()
    changes = {"state": P.DELIVERED if ok else P.FAILED}
    if ok:
        changes.update(
            external_id=delivered.external_id,
            external_url=delivered.url,
            delivered_at=now,
            error="",
        )
    else:
        changes["error"] = detail
    # Only the claim holder finishes: a recovered-and-reclaimed publication is not ours any more.
    if not _mine(publication, P.SENDING).update(**changes):
        return
    for field, value in changes.items():
        setattr(publication, field, value)
    DeliveryAttempt.objects.create(publication=publication, ok=ok, detail=detail)
    ledger.append(
        "publication.delivered" if ok else "publication.failed",
        post=publication.post_id,
        publication=publication.pk,
        account=publication.account_id,
        network=publication.account.network,
        revision=publication.revision.number,
        content_hash=publication.revision.content_hash,
        external_id=publication.external_id,
        url=publication.external_url,
        error=publication.error,
        attempts=publication.attempts,
    )


def outcome(counts):
    """The post's state once no publication is waiting or sending, else None: published when
    all were delivered, partially_published when some were and the others failed for good,
    failed when none was. `counts`: {publication state: how many} of the post."""
    states = set(counts)
    if not states or states & {P.PENDING, P.SENDING}:
        return None
    if states == {P.DELIVERED}:
        return State.PUBLISHED
    return State.PARTIALLY_PUBLISHED if P.DELIVERED in states else State.FAILED


def reset_failed(post):
    """A manual retry: the failed publications only, with their idempotency keys, from scratch."""
    failed = list(post.publications.filter(state=P.FAILED).values_list("pk", flat=True))
    Publication.objects.filter(pk__in=failed, state=P.FAILED).update(
        state=P.PENDING,
        error="",
        claimed_at=None,
        attempts=0,
        lost_claims=0,
        next_attempt_at=None,
        enqueued_at=timezone.now(),
    )
    return failed


# --- The sweeper ------------------------------------------------------------------------------


def recover_stalled(now=None):
    """Publications whose worker died mid-delivery (sending past the lease).

    First ask the network whether the interrupted attempt did publish (`find_delivery`, by
    idempotency key): if so, record the delivery and send nothing. Otherwise put it back to
    pending with the same idempotency key, so a receiver can drop a duplicate; after
    DELIVERY_MAX_CLAIMS lost claims, fail it for a person to look at. Returns the ids put back.
    """
    from . import workflow

    now = now or timezone.now()
    stalled = Publication.objects.filter(
        state=P.SENDING, claimed_at__lt=now - _seconds("DELIVERY_LEASE_SECONDS")
    ).select_related("account", "revision", "post")
    recovered = []
    for publication in stalled:
        found = _find_delivery(publication)
        if found is not None:
            detail = "found on the network after an interrupted attempt; not sent again"
            workflow.settle(
                publication.post_id,
                record=partial(_finish, publication, ok=True, detail=detail, delivered=found),
            )
        elif publication.lost_claims + 1 >= _config("DELIVERY_MAX_CLAIMS"):
            detail = (
                f"the delivery did not complete in {publication.attempts} tries; "
                "check the receiver before retrying"
            )
            workflow.settle(
                publication.post_id, record=partial(_finish, publication, ok=False, detail=detail)
            )
        elif _mine(publication, P.SENDING).update(
            state=P.PENDING,
            claimed_at=None,
            lost_claims=F("lost_claims") + 1,
            next_attempt_at=None,
            enqueued_at=now,
        ):
            recovered.append(publication.pk)
    # A worker that died between recording a delivery and settling its post left the post in
    # "publishing" with nothing in flight: settle it now.
    in_flight = Publication.objects.filter(post=OuterRef("pk"), state__in=[P.PENDING, P.SENDING])
    unsettled = Post.objects.filter(state=State.PUBLISHING).exclude(Exists(in_flight))
    for post_id in unsettled.values_list("pk", flat=True):
        workflow.settle(post_id)
    transaction.on_commit(lambda: enqueue_deliveries(recovered))
    return recovered


def _find_delivery(publication):
    try:
        content = ReleasedContent.of(publication.revision)
        return get_connector(publication.account.network).find_delivery(
            publication.account, publication.idempotency_key, content
        )
    except Exception as error:  # cannot tell: send again with the same key
        log.warning("find_delivery failed for publication %s: %s", publication.pk, error)
        return None


# --- Take-downs -------------------------------------------------------------------------------


def start_retractions(post, now=None):
    """In the retract transaction: every delivered publication is to be deleted (an outbox);
    returns their ids, to enqueue on commit."""
    now = now or timezone.now()
    ids = list(post.publications.filter(state=P.DELIVERED).values_list("pk", flat=True))
    _restart_retractions(ids, P.DELIVERED, now)
    return ids


def reset_failed_retractions(post, now=None):
    """A manual retry of the deletions that failed; returns their ids."""
    now = now or timezone.now()
    ids = list(post.publications.filter(state=P.RETRACT_FAILED).values_list("pk", flat=True))
    _restart_retractions(ids, P.RETRACT_FAILED, now)
    return ids


def _restart_retractions(ids, state, now):
    Publication.objects.filter(pk__in=ids, state=state).update(
        state=P.RETRACTING,
        attempts=0,
        lost_claims=0,
        claimed_at=None,
        error="",
        next_attempt_at=None,
        enqueued_at=now,
    )


def claim_retraction(publication_id, now=None):
    """Take a due take-down; a claim older than the lease (its worker died) can be taken over."""
    now = now or timezone.now()
    free = Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - _seconds("DELIVERY_LEASE_SECONDS"))
    return bool(
        Publication.objects.filter(_due(now), free, pk=publication_id, state=P.RETRACTING).update(
            claimed_at=now, attempts=F("attempts") + 1
        )
    )


def retract(publication_id, now=None):
    """One attempt at deleting a publication on its network; True when this call deleted it."""
    if not claim_retraction(publication_id, now):
        return False
    publication = Publication.objects.select_related("account", "post").get(pk=publication_id)
    network = publication.account.network
    most = _config("DELIVERY_MAX_ATTEMPTS")
    try:
        if publication.attempts > most:  # lost its worker every time
            raise DeliveryError(
                f"the removal did not complete in {publication.attempts - 1} tries", permanent=True
            )
        if not publication.external_id:
            raise DeliveryError("the network gave no id for this post to delete", permanent=True)
        if (wait := ratelimit.acquire(network)) > 0:
            _put_back(publication, wait, now)
            return False
        get_connector(network).retract(publication.account, publication.external_id)
    except DeliveryError as error:
        _retraction_failed(publication, error, now)
    except Exception as error:
        log.exception("connector %s crashed while deleting", network)
        error = DeliveryError(f"connector error: {error.__class__.__name__}")
        _retraction_failed(publication, error, now)
    else:
        _finish_retraction(publication, ok=True, detail="")
    return publication.state == P.RETRACTED


def _retraction_failed(publication, error, now=None):
    now = now or timezone.now()
    final, detail, wait = _retry_plan(publication, error)
    if error.reconnect:
        _needs_reconnect(publication.account_id, str(error), now)
    if final:
        _finish_retraction(publication, ok=False, detail=detail)
        return
    changes, countdown = _reschedule_changes(wait, now)
    with transaction.atomic():
        if not _mine(publication, P.RETRACTING).update(error=detail, **changes):
            return
        DeliveryAttempt.objects.create(
            publication=publication, action=DeliveryAttempt.Action.RETRACT, ok=False, detail=detail
        )
        if countdown is not None:
            transaction.on_commit(lambda: enqueue_retractions([publication.pk], countdown))


@transaction.atomic
def _finish_retraction(publication, *, ok, detail):
    now = timezone.now()
    changes = (
        {"state": P.RETRACTED, "retracted_at": now, "error": "", "claimed_at": None}
        if ok
        else {"state": P.RETRACT_FAILED, "error": detail, "claimed_at": None}
    )
    if not _mine(publication, P.RETRACTING).update(**changes):
        return
    for field, value in changes.items():
        setattr(publication, field, value)
    DeliveryAttempt.objects.create(
        publication=publication, action=DeliveryAttempt.Action.RETRACT, ok=ok, detail=detail
    )
    ledger.append(
        "publication.retracted" if ok else "publication.retract_failed",
        post=publication.post_id,
        publication=publication.pk,
        account=publication.account_id,
        network=publication.account.network,
        external_id=publication.external_id,
        url=publication.external_url,
        error=publication.error,
        attempts=publication.attempts,
    )
