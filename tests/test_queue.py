"""The reviewer queue: scope, urgency order, claims, pagination, and a query count that does not
grow with the number of posts."""

import re

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm, get_objects_for_user, get_users_with_perms

from approvals import workflow
from approvals.access import review_queue, reviewable_teams, team_reviewers
from approvals.models import Membership, Post, ReviewStep, Revision, StepClaim, Team
from approvals.models.posts import State
from approvals.views.reviews import time_left

pytestmark = pytest.mark.django_db

H = timezone.timedelta(hours=1)
MIN = timezone.timedelta(minutes=1)


def bulk_in_review(n, *, team, author, group, due_in=8 * H, publish_at=None, escalation=None):
    """n posts as `workflow.submit` leaves them (in review, one revision, one active step), made
    with three bulk INSERTs and one bulk UPDATE instead of thousands of workflow calls."""
    now = timezone.now()
    posts = Post.objects.bulk_create(
        Post(
            team=team,
            author=author,
            state=State.IN_REVIEW,
            submitted_at=now - i * MIN,
            publish_at=publish_at,
        )
        for i in range(n)
    )
    revisions = Revision.objects.bulk_create(
        Revision(
            post=post,
            number=1,
            text=f"Bulk post {post.pk}: rates from 2.9%.",
            content_hash=f"{post.pk:064x}",
            created_by=author,
        )
        for post in posts
    )
    for post, revision in zip(posts, revisions, strict=True):
        post.current_revision = revision
    Post.objects.bulk_update(posts, ["current_revision"], batch_size=500)
    return ReviewStep.objects.bulk_create(
        ReviewStep(
            post=post,
            revision=post.current_revision,
            group=group,
            quorum=1,
            stage=1,
            state=ReviewStep.State.ACTIVE,
            due_hours=8,
            activated_at=now,
            due_at=now + due_in if due_in is not None else None,
            escalation_group=escalation,
            reasons=[{"rule": "Default review", "version": 1}],
        )
        for post in posts
    )


def submitted(world, text, author=None, account=None, **kwargs):
    author = author or world.alice
    account = account or world.lyon_sandbox
    post = workflow.create_post(author, text=text, account_ids=[account.pk], **kwargs)
    return workflow.submit(post.pk, author)


def step_of(post):
    return ReviewStep.objects.get(post=post, revision=post.current_revision)


def queue_page(client, user, **params):
    client.force_login(user)
    response = client.get(reverse("review_queue"), params)
    assert response.status_code == 200
    return response


def rows(response):
    return [(step.post_id, step.group.name) for step in response.context["steps"]]


def post_links(response):
    return [int(pk) for pk in re.findall(r'href="/posts/(\d+)/"', response.content.decode())]


# --- one query whatever the number of posts ------------------------------------------------------


def test_queue_page_runs_the_same_queries_with_10_and_1000_posts(client, world):
    legal = Group.objects.create(name="Legal")
    legal.user_set.add(world.rita)
    url = reverse("review_queue")
    first = bulk_in_review(10, team=world.lyon, author=world.alice, group=world.reviewers)
    StepClaim.objects.create(step=first[0], reviewer=world.sam)
    client.force_login(world.rita)
    client.get(url)  # warm caches (content types, session) out of the measure

    with CaptureQueriesContext(connection) as small:
        response = client.get(url)
    assert len(response.context["steps"]) == 10
    assert "In review by sam since" in response.content.decode()

    bulk_in_review(495, team=world.lyon, author=world.alice, group=world.reviewers)
    bulk_in_review(495, team=world.lyon, author=world.alice, group=legal, escalation=legal)
    bulk_in_review(300, team=world.paris, author=world.bruno, group=world.reviewers)
    assert Post.objects.filter(state=State.IN_REVIEW).count() == 1300
    with CaptureQueriesContext(connection) as large:
        response = client.get(url)
    assert len(response.context["steps"]) == 50
    assert response.context["page"].paginator.count == 1000
    assert "In review by sam since" in response.content.decode()

    assert len(small) == len(large), [q["sql"] for q in large]
    # session, user; count, ids of the page, details of those steps, their live claims
    assert len(large) == 6, [q["sql"] for q in large]


def test_review_queue_function_is_two_queries_rows_and_claims(world, django_assert_num_queries):
    bulk_in_review(200, team=world.lyon, author=world.alice, group=world.reviewers)
    review_queue(world.rita).count()  # warm the content type cache
    with django_assert_num_queries(2):
        steps = list(review_queue(world.rita))
        assert len(steps) == 200
        for step in steps:  # every related object and figure is already loaded
            assert step.post.author.username == "alice"
            assert step.post.team.name == "Lyon"
            assert step.post.current_revision.text.startswith("Bulk post")
            assert step.group.name == "Compliance reviewers"
            assert step.approvals == 0 and step.live_claims == []


# --- scope ----------------------------------------------------------------------------------------


def test_queue_holds_only_granted_teams_and_never_own_posts(client, world, in_review):
    paris_post = submitted(world, "Paris", author=world.bruno, account=world.paris_sandbox)
    assert post_links(queue_page(client, world.rita)) == [in_review.pk]
    assert post_links(queue_page(client, world.tom)) == [paris_post.pk]
    # sam is also an advisor of Lyon: his own post waits for rita, never for him
    Membership.objects.create(user=world.sam, team=world.lyon)
    own = submitted(world, "Sam's own post", author=world.sam)
    assert own.pk not in post_links(queue_page(client, world.sam))
    assert own.pk in post_links(queue_page(client, world.rita))
    # nor for anybody who is not granted the team, even in the step's group
    assert own.pk not in post_links(queue_page(client, world.tom))


def test_team_granted_through_a_group_counts(client, world):
    paris_post = submitted(world, "Paris", author=world.bruno, account=world.paris_sandbox)
    assert paris_post.pk not in post_links(queue_page(client, world.sam))
    paris_reviewers = Group.objects.create(name="Paris reviewers")
    assign_perm("approvals.review_team", paris_reviewers, world.paris)
    paris_reviewers.user_set.add(world.sam)
    assert paris_post.pk in post_links(queue_page(client, world.sam))


def test_reviewable_teams_are_guardians_teams(world):
    paris_reviewers = Group.objects.create(name="Paris reviewers")
    assign_perm("approvals.review_team", paris_reviewers, world.paris)
    paris_reviewers.user_set.add(world.sam)
    assign_perm("approvals.review_team", world.carla)  # a global grant: not an object grant
    world.carla.is_superuser = True
    world.carla.save()
    for user in (world.rita, world.sam, world.tom, world.alice, world.carla):
        expected = get_objects_for_user(
            user, "approvals.review_team", klass=Team, accept_global_perms=False
        )
        assert sorted(t.pk for t in reviewable_teams(user)) == sorted(t.pk for t in expected)
    assert sorted(t.name for t in reviewable_teams(world.sam)) == ["Lyon", "Paris"]
    assert list(reviewable_teams(world.alice)) == []


def test_team_reviewers_are_guardians_users_with_the_grant(world):
    paris_reviewers = Group.objects.create(name="Paris reviewers")
    assign_perm("approvals.review_team", paris_reviewers, world.paris)
    paris_reviewers.user_set.add(world.sam, world.tom)
    assign_perm("approvals.review_team", world.rita, world.paris)  # direct, and through a group
    paris_reviewers.user_set.add(world.rita)
    assign_perm("approvals.review_team", world.alice)  # a global grant: not an object grant
    world.carla.is_superuser = True
    world.carla.save()
    for team in (world.lyon, world.paris):
        expected = get_users_with_perms(
            team, with_superusers=True, only_with_perms_in=["review_team"]
        )
        assert sorted(u.pk for u in team_reviewers(team.pk)) == sorted(u.pk for u in expected)
    assert {u.username for u in team_reviewers(world.paris.pk)} == {"sam", "tom", "rita", "carla"}


def test_granted_team_is_not_enough_without_the_steps_group(client, world, in_review):
    world.reviewers.user_set.remove(world.sam)
    assert post_links(queue_page(client, world.sam)) == []
    assert post_links(queue_page(client, world.rita)) == [in_review.pk]


def test_a_step_the_reviewer_decided_leaves_their_queue_only(client, world, in_review):
    ReviewStep.objects.filter(pk=step_of(in_review).pk).update(quorum=2)
    workflow.decide(
        in_review.pk,
        world.rita,
        outcome="approve",
        revision_hash=in_review.current_revision.content_hash,
    )
    assert post_links(queue_page(client, world.rita)) == []
    response = queue_page(client, world.sam)
    assert post_links(response) == [in_review.pk]
    assert "1 / 2" in response.content.decode()
    assert response.context["steps"][0].approvals == 1


def test_a_post_with_two_of_my_groups_shows_one_row_per_step_until_i_approve_one(
    client, world, in_review
):
    legal = Group.objects.create(name="Legal")
    legal.user_set.add(world.rita, world.sam)
    first = step_of(in_review)
    ReviewStep.objects.create(
        post=in_review,
        revision=in_review.current_revision,
        group=legal,
        stage=first.stage,
        state=ReviewStep.State.ACTIVE,
        due_at=first.due_at,
    )
    response = queue_page(client, world.rita)
    assert sorted(rows(response)) == [
        (in_review.pk, "Compliance reviewers"),
        (in_review.pk, "Legal"),
    ]
    workflow.decide(
        in_review.pk,
        world.rita,
        outcome="approve",
        step_id=first.pk,
        revision_hash=in_review.current_revision.content_hash,
    )
    # segregation of duties: rita may not approve the Legal step too, so it is not hers to do
    assert rows(queue_page(client, world.rita)) == []
    assert rows(queue_page(client, world.sam)) == [(in_review.pk, "Legal")]
    ReviewStep.objects.filter(group=legal).update(allow_multiple_steps_per_reviewer=True)
    assert rows(queue_page(client, world.rita)) == [(in_review.pk, "Legal")]


def test_a_step_of_an_older_revision_never_shows(client, world, in_review):
    newer = Revision.objects.create(
        post=in_review,
        number=2,
        text="Newer text",
        content_hash="f" * 64,
        created_by=world.alice,
    )
    Post.objects.filter(pk=in_review.pk).update(current_revision=newer)
    assert ReviewStep.objects.get(post=in_review).state == ReviewStep.State.ACTIVE  # still, on r1
    assert post_links(queue_page(client, world.rita)) == []


def test_only_active_steps_of_posts_in_review_show(client, world, in_review):
    other = submitted(world, "Second post")
    ReviewStep.objects.filter(post=other).update(state=ReviewStep.State.WAITING)
    withdrawn = submitted(world, "Withdrawn post")
    workflow.withdraw(withdrawn.pk, world.alice)
    assert post_links(queue_page(client, world.rita)) == [in_review.pk]


def test_escalated_step_reaches_the_escalation_group_only_after_escalation(
    client, world, in_review
):
    legal = Group.objects.create(name="Legal")
    legal.user_set.add(world.sam)
    ReviewStep.objects.filter(post=in_review).update(group=legal, escalation_group=world.reviewers)
    world.reviewers.user_set.remove(world.sam)
    assert post_links(queue_page(client, world.rita)) == []  # not in Legal, not escalated yet
    assert post_links(queue_page(client, world.sam)) == [in_review.pk]

    ReviewStep.objects.filter(post=in_review).update(escalated_at=timezone.now())
    response = queue_page(client, world.rita)
    assert rows(response) == [(in_review.pk, "Legal")]
    assert ">escalated</span>" in response.content.decode()
    assert post_links(queue_page(client, world.sam)) == [in_review.pk]
    # tom is in the escalation group but not granted Lyon
    assert post_links(queue_page(client, world.tom)) == []


# --- order and what each row says ----------------------------------------------------------------


def test_queue_orders_overdue_then_due_soonest_then_no_due_time_then_publish_time(client, world):
    now = timezone.now()
    plan = [  # (name, due in, publish in), in the expected order
        ("overdue", -2 * H, None),
        ("due soon", 3 * H + 10 * MIN, None),
        ("due later, publishes first", 5 * H, 1 * H),
        ("due later, publishes next", 5 * H, 3 * H),
        ("due later, no publish time", 5 * H, None),
        ("no due time, publishes", None, 2 * H),
        ("no due time, submitted first", None, None),
        ("no due time, submitted last", None, None),
    ]
    ids = {}
    for name, _, publish_in in reversed(plan[:6]):  # submitted in the opposite order
        ids[name] = submitted(world, name, publish_at=publish_in and now + publish_in).pk
    for name, _, _ in plan[6:]:
        ids[name] = submitted(world, name).pk
    for name, due_in, _ in plan:
        due_at = None if due_in is None else now + due_in + 30 * timezone.timedelta(seconds=1)
        ReviewStep.objects.filter(post_id=ids[name]).update(due_at=due_at)

    response = queue_page(client, world.rita)
    assert [step.post_id for step in response.context["steps"]] == [ids[n] for n, _, _ in plan]
    assert post_links(response) == [ids[n] for n, _, _ in plan]
    page = response.content.decode()
    assert "overdue by 1 h 59 min" in page
    assert "3 h 10 min left" in page
    assert "no due time" in page
    assert "overdue first" in page.lower()  # the caption says how the rows are sorted


def test_time_left_wording():
    now = timezone.now()
    assert time_left(None, now) == "no due time"
    assert time_left(now - 2 * H, now) == "overdue by 2 h"
    assert time_left(now - 2 * H - 5 * MIN, now) == "overdue by 2 h 5 min"
    assert time_left(now + 3 * H + 10 * MIN, now) == "3 h 10 min left"
    assert time_left(now + 45 * MIN, now) == "45 min left"
    assert time_left(now + 26 * H, now) == "1 d 2 h left"
    assert time_left(now, now) == "overdue by less than 1 min"


def test_row_shows_author_team_group_approvals_and_publish_risk(client, world, in_review):
    Post.objects.filter(pk=in_review.pk).update(
        publish_at=timezone.now() + H, publish_at_risk_since=timezone.now()
    )
    page = queue_page(client, world.rita).content.decode()
    assert "<td>alice</td>" in page and "<td>Lyon</td>" in page
    assert "Compliance reviewers" in page
    assert "0 / 1" in page
    assert "publish time at risk" in page
    assert '<th scope="col">' in page and "<caption>" in page


def test_claims_show_who_took_the_step_while_they_are_live(client, world, in_review, settings):
    claim = workflow.claim(in_review.pk, world.sam)
    since = timezone.localtime(claim.claimed_at).strftime("%H:%M")
    page = queue_page(client, world.rita).content.decode()
    assert "In review by sam since <time datetime=" in page
    assert f">{since}</time>" in page
    page = queue_page(client, world.sam).content.decode()
    assert "You took this since" in page and "In review by sam" not in page

    minutes = settings.REVIEWFLOW["CLAIM_MINUTES"]
    StepClaim.objects.filter(pk=claim.pk).update(claimed_at=timezone.now() - (minutes + 1) * MIN)
    page = queue_page(client, world.rita).content.decode()
    assert "In review by" not in page
    assert post_links(queue_page(client, world.rita)) == [in_review.pk]


def test_claim_lapse_is_computed_from_the_given_now(world, in_review):
    claim = workflow.claim(in_review.pk, world.sam)
    later = claim.claimed_at + timezone.timedelta(hours=5)
    assert [c.reviewer for c in review_queue(world.rita, claim.claimed_at)[0].live_claims] == [
        world.sam
    ]
    assert review_queue(world.rita, later)[0].live_claims == []


# --- pagination -----------------------------------------------------------------------------------


def test_queue_is_paginated_and_bad_page_numbers_never_fail(client, world):
    bulk_in_review(60, team=world.lyon, author=world.alice, group=world.reviewers)
    first = queue_page(client, world.rita)
    assert len(first.context["steps"]) == 50
    assert "Page 1 of 2" in first.content.decode()
    assert 'href="?page=2"' in first.content.decode()
    second = queue_page(client, world.rita, page=2)
    assert len(second.context["steps"]) == 10
    assert not set(post_links(first)) & set(post_links(second))
    for bad, expected in [
        ("abc", 1),
        ("", 1),
        ("1.5", 1),
        ("%00", 1),
        ("999", 2),
        ("0", 2),
        ("-1", 2),
        ("99999999999999999999999", 2),
    ]:
        response = queue_page(client, world.rita, page=bad)
        assert response.context["page"].number == expected, bad


def test_empty_queue_says_so(client, world):
    response = queue_page(client, world.rita, page="7")
    assert "Nothing waiting for you." in response.content.decode()
