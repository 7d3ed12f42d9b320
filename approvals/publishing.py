"""The release gate and idempotent delivery of approved content to connectors."""

import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from . import ledger
from .connectors import DeliveryError, ReleasedContent, get_connector
from .models import DeliveryAttempt, Publication
from .models.posts import State

log = logging.getLogger(__name__)


def create_publications(post):
    """One publication per target account of the approved revision (unique in the database)."""
    revision = post.approved_revision
    return [
        Publication.objects.get_or_create(
            revision=revision, account=account, defaults={"post": post}
        )[0]
        for account in revision.accounts.all()
    ]


def enqueue_release(post_id):
    from .tasks import release_post

    release_post.delay(post_id)


def enqueue_deliveries(publications):
    from .tasks import deliver_publication

    for publication in publications:
        deliver_publication.delay(publication.pk)


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


def claim(publication_id):
    """Take a pending publication for delivery; False when another worker or run has it."""
    return bool(
        Publication.objects.filter(pk=publication_id, state=Publication.State.PENDING).update(
            state=Publication.State.SENDING,
            claimed_at=timezone.now(),
            attempts=F("attempts") + 1,
        )
    )


def deliver(publication_id):
    """Deliver one publication at most once; returns True when this call delivered it."""
    from . import workflow

    if not claim(publication_id):
        return False
    publication = Publication.objects.select_related(
        "post", "revision", "account", "post__approved_revision"
    ).get(pk=publication_id)
    refusal = gate(publication)
    try:
        if refusal:
            raise DeliveryError(f"release gate: {refusal}", permanent=True)
        content = ReleasedContent.of(publication.revision)
        delivered = get_connector(publication.account.network).deliver(publication, content)
    except DeliveryError as error:
        _finish(publication, ok=False, detail=str(error))
    except Exception as error:  # a connector bug must leave a visible, retryable failure
        log.exception("connector %s crashed", publication.account.network)
        _finish(publication, ok=False, detail=f"connector error: {error.__class__.__name__}")
    else:
        _finish(publication, ok=True, detail="", delivered=delivered)
    workflow.settle(publication.post_id)
    return publication.state == Publication.State.DELIVERED


@transaction.atomic
def _finish(publication, *, ok, detail, delivered=None):
    now = timezone.now()
    changes = {"state": Publication.State.DELIVERED if ok else Publication.State.FAILED}
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
    updated = Publication.objects.filter(
        pk=publication.pk, state=Publication.State.SENDING, claimed_at=publication.claimed_at
    ).update(**changes)
    if not updated:
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
    )


def outcome(post):
    """'delivered', 'failed', or None while a publication is still pending or sending."""
    states = set(post.publications.values_list("state", flat=True))
    if states & {Publication.State.PENDING, Publication.State.SENDING}:
        return None
    return "failed" if Publication.State.FAILED in states else "delivered"


def reset_failed(post):
    failed = list(post.publications.filter(state=Publication.State.FAILED))
    Publication.objects.filter(pk__in=[p.pk for p in failed]).update(
        state=Publication.State.PENDING, error="", claimed_at=None
    )
    return failed


def recover_stalled(now=None):
    """Put back publications whose worker died mid-delivery (same idempotency key)."""
    from . import workflow

    now = now or timezone.now()
    lease = timezone.timedelta(seconds=settings.REVIEWFLOW["DELIVERY_LEASE_SECONDS"])
    stalled = Publication.objects.filter(
        state=Publication.State.SENDING, claimed_at__lt=now - lease
    ).select_related("account", "revision")
    recovered = []
    for publication in stalled:
        if publication.attempts >= settings.REVIEWFLOW["DELIVERY_MAX_CLAIMS"]:
            detail = (
                f"the delivery did not complete in {publication.attempts} tries; "
                "check the receiver before retrying"
            )
            _finish(publication, ok=False, detail=detail)
            workflow.settle(publication.post_id)
        elif Publication.objects.filter(
            pk=publication.pk, state=Publication.State.SENDING, claimed_at=publication.claimed_at
        ).update(state=Publication.State.PENDING):
            recovered.append(publication)
    transaction.on_commit(lambda: enqueue_deliveries(recovered))
    return [p.pk for p in recovered]
