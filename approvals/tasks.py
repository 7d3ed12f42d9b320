"""Thin Celery tasks: each calls workflow or publishing, which hold the logic."""

from celery import shared_task

from . import publishing, workflow


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
