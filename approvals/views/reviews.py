"""The reviewer's queue: what waits for them, most urgent first."""

from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils import timezone

from approvals.access import waiting_steps, with_queue_details
from approvals.models import ReviewStep

PER_PAGE = 50


def time_left(due_at, now):
    """'overdue by 2 h', '3 h 10 min left', or 'no due time'."""
    if due_at is None:
        return "no due time"
    seconds = (due_at - now).total_seconds()
    span = _span(abs(seconds))
    return f"overdue by {span}" if seconds <= 0 else f"{span} left"


def _span(seconds):
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "less than 1 min"


def review_queue_view(request):
    """Four queries whatever the queue's length: count, the page's step ids in queue order, the
    details of those steps, their live claims.

    Paging through bare ids, then loading posts, revisions, people and groups for the rows shown
    only, keeps the sort narrow: on 100,000 posts it halves the time of one query that joins
    everything for thousands of waiting steps before keeping 50 (see benchmarks/queue.py).
    """
    now = timezone.now()
    me = request.user.pk
    # get_page turns a missing or malformed ?page= into page 1 and an out-of-range one into the
    # last page, so a bad link never gives a 500.
    ids = waiting_steps(request.user).values_list("pk", flat=True)
    page = Paginator(ids, PER_PAGE).get_page(request.GET.get("page"))
    ids = list(page.object_list)
    details = with_queue_details(ReviewStep.objects.filter(pk__in=ids), now)
    by_id = {step.pk: step for step in details} if ids else {}
    steps = [by_id[pk] for pk in ids if pk in by_id]
    for step in steps:
        step.overdue = step.due_at is not None and step.due_at <= now
        step.time_left = time_left(step.due_at, now)
        step.my_claim = next((c for c in step.live_claims if c.reviewer_id == me), None)
        step.claims_by_others = [c for c in step.live_claims if c.reviewer_id != me]
    return render(request, "approvals/queue.html", {"page": page, "steps": steps, "now": now})
