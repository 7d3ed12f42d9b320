"""Twenty reviewers deciding on one post at the same moment: exactly one decision counts."""

import pytest
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import assign_perm

from approvals import workflow
from approvals.models import Decision, LedgerEntry, Post
from approvals.models.posts import State

from .conftest import at_once, make_user

THREADS = 20
OUTCOMES = ["approve", "request_changes", "reject"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_decisions_one_wins(world, django_user_model):
    post = workflow.create_post(
        world.alice, text="Épargne retraite : parlons-en.", account_ids=[world.lyon_sandbox.pk]
    )
    post = workflow.submit(post.pk, world.alice)
    revision_hash = post.current_revision.content_hash
    clients = []
    for n in range(THREADS):
        reviewer = make_user(django_user_model, f"reviewer{n}")
        assign_perm("approvals.review_team", reviewer, world.lyon)
        world.reviewers.user_set.add(reviewer)
        client = Client()
        client.force_login(reviewer)
        clients.append(client)

    def decide(n):
        return clients[n].post(
            reverse("post_decide", args=[post.pk]),
            {
                "outcome": OUTCOMES[n % 3],
                "reason": f"Reason from reviewer {n}",
                "revision_hash": revision_hash,
            },
        )

    responses = at_once(THREADS, decide)

    codes = sorted(r.status_code for r in responses)
    assert codes == [302] + [409] * (THREADS - 1), codes
    for response in responses:
        if response.status_code == 409:
            assert "Already decided" in response.content.decode()
    decision = Decision.objects.get(post=post)
    decided = LedgerEntry.objects.filter(
        post_id=post.pk,
        event__in=["post.approved", "post.changes_requested", "post.rejected"],
    )
    assert decided.count() == 1
    assert decided.get().payload["decision"] == decision.pk
    final = Post.objects.get(pk=post.pk).state
    expected = {
        "approve": {State.PUBLISHED},
        "request_changes": {State.CHANGES_REQUESTED},
        "reject": {State.REJECTED},
    }[decision.outcome]
    assert final in expected
