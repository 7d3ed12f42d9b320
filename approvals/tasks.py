"""Thin Celery tasks: each calls workflow or publishing, which hold the logic.

Beat runs the sweeps (see CELERY_BEAT_SCHEDULE): release_due_posts and deliver_due_publications
make the database the source of truth, so a lost message only delays the work it asked for.
"""

import logging

from celery import shared_task
from django.conf import settings

from . import ledger, notify, publishing, workflow

log = logging.getLogger(__name__)


def send(task, *args, countdown=None):
    """Send one message. A broker that is down only delays the work: each task sent this way has
    a beat sweep that finds in the database what is still to do. Eager (tests), errors raise."""
    try:
        task.apply_async(args, countdown=countdown or None)
    except Exception:
        if settings.CELERY_TASK_ALWAYS_EAGER:
            raise
        log.exception("Could not enqueue %s%r; the sweep will do it", task.name, args)


@shared_task
def release_due_posts():
    """Release approved posts whose time has come; expire those whose approval lapsed."""
    for post_id in workflow.due_post_ids():
        try:
            workflow.release(post_id)
        except Exception:  # one post's problem must not hold back the others
            log.exception("Could not release post %s", post_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def deliver_publication(publication_id):
    publishing.deliver(publication_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def retract_publication(publication_id):
    publishing.retract(publication_id)


@shared_task
def deliver_due_publications():
    """The outbox sweep: enqueue due deliveries and take-downs whose message is missing."""
    publishing.enqueue_due()


@shared_task
def recover_stalled_publications():
    publishing.recover_stalled()


@shared_task
def warn_expiring_approvals():
    workflow.warn_expiring()


@shared_task
def escalate_overdue_steps():
    workflow.escalate_overdue()


@shared_task
def flag_posts_at_risk():
    workflow.flag_publish_at_risk()


@shared_task
def send_notifications(notification_ids=None):
    """Mail these immediate notifications; without ids, those whose task was lost."""
    notify.send_immediate(notification_ids)


@shared_task
def send_digests():
    notify.send_digests()


@shared_task
def send_gathered_notifications():
    """Mail each person, in one mail, what a burst of events gathered for them."""
    notify.send_gathered()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def export_ledger(export_id):
    """Write a ledger export for an auditor: too long, for years of ledger, for a web request."""
    ledger.write_export(export_id)


@shared_task
def write_stalled_ledger_exports():
    """Write the exports whose message was lost: the database says they are waiting."""
    for export_id in ledger.stalled_export_ids():
        try:
            ledger.write_export(export_id)
        except Exception:  # said in the export's row; the others still get written
            log.exception("Could not write ledger export %s", export_id)


@shared_task
def check_account_credentials():
    """Check every connected account's token with its network (approvals/health.py)."""
    from . import health

    health.check_all()
