"""Thin Celery tasks: each calls workflow or publishing, which hold the logic."""

from celery import shared_task

from . import notify, publishing, workflow


@shared_task
def release_post(post_id):
    workflow.release(post_id)


@shared_task
def release_due_posts():
    for post_id in workflow.due_post_ids():
        workflow.release(post_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def deliver_publication(publication_id):
    publishing.deliver(publication_id)


@shared_task
def recover_stalled_publications():
    publishing.recover_stalled()


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
