"""Due times in business hours, escalation of overdue steps with frozen time, publish times at
risk flagged before the slot is lost."""

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals import workflow
from approvals.duetime import add_business_hours
from approvals.models import ApprovalRule, LedgerEntry, Post, ReviewStep, RuleStep
from approvals.models.posts import State

from .conftest import make_user

pytestmark = pytest.mark.django_db

H = timezone.timedelta(hours=1)
MIN = timezone.timedelta(minutes=1)


def local(*args):
    """A moment in the server's timezone (business hours are counted there)."""
    return datetime(*args, tzinfo=timezone.get_default_timezone())


# 2025-01-10 is a Friday; business hours are Monday to Friday, 09:00 to 18:00.
@pytest.mark.parametrize(
    "start, hours, expected",
    [
        pytest.param(local(2025, 1, 10, 17), 2, local(2025, 1, 13, 10), id="friday-to-monday"),
        pytest.param(local(2025, 1, 13, 7), 2, local(2025, 1, 13, 11), id="before-opening"),
        pytest.param(local(2025, 1, 14, 18), 1, local(2025, 1, 15, 10), id="at-closing"),
        pytest.param(local(2025, 1, 14, 22), 3, local(2025, 1, 15, 12), id="evening"),
        pytest.param(local(2025, 1, 11, 12), 3, local(2025, 1, 13, 12), id="saturday-start"),
        pytest.param(local(2025, 1, 12, 23), 9, local(2025, 1, 13, 18), id="sunday-one-full-day"),
        pytest.param(local(2025, 1, 15, 10), 20, local(2025, 1, 17, 12), id="multi-day"),
        pytest.param(local(2025, 1, 9, 16), 40, local(2025, 1, 16, 11), id="over-a-weekend"),
        pytest.param(local(2025, 1, 13, 9, 30), 0, local(2025, 1, 13, 9, 30), id="zero-hours"),
    ],
)
def test_add_business_hours(start, hours, expected):
    assert add_business_hours(start, hours) == expected


def test_add_business_hours_counts_in_the_server_timezone_whatever_the_input():
    utc_friday_16 = datetime(2025, 1, 10, 16, tzinfo=UTC)  # 17:00 in Paris
    assert add_business_hours(utc_friday_16, 2) == local(2025, 1, 13, 10)


def test_submit_sets_the_due_time_of_the_catch_all_step(in_review):
    step = in_review.steps.get()
    assert (step.due_hours, step.business_hours) == (8, True)
    assert step.state == ReviewStep.State.ACTIVE
    assert step.due_at == add_business_hours(step.activated_at, 8)
    assert step.escalated_at is None


# --- Escalation ----------------------------------------------------------------------------------


@pytest.fixture
def managers(world, django_user_model):
    """The escalation group of the catch-all step, "Compliance managers"; maya reviews Lyon."""
    group = Group.objects.create(name="Compliance managers")
    maya = make_user(django_user_model, "maya")
    group.user_set.add(maya)
    assign_perm("approvals.review_team", maya, world.lyon)
    RuleStep.objects.filter(rule__name="Default review").update(escalation_group=group)
    return SimpleNamespace(group=group, maya=maya)


def submit(world, **create):
    post = workflow.create_post(
        world.alice, text="Livret A: 3% net.", account_ids=[world.lyon_sandbox.pk], **create
    )
    return workflow.submit(post.pk, world.alice)


def approve(post, reviewer):
    post.refresh_from_db()
    return workflow.decide(
        post.pk, reviewer, outcome="approve", revision_hash=post.current_revision.content_hash
    )


@pytest.mark.usefixtures("hours_apart")
def test_overdue_step_is_escalated_once_and_its_escalation_group_may_then_decide(
    world, managers, mailoutbox, django_capture_on_commit_callbacks
):
    post = submit(world)
    step = post.steps.get()
    assert step.escalation_group == managers.group
    with pytest.raises(workflow.NotAllowed):
        approve(post, managers.maya)  # not their step until it is overdue

    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.escalate_overdue(now=step.due_at - MIN) == []
    step.refresh_from_db()
    assert step.escalated_at is None
    assert mailoutbox == []

    late = step.due_at + MIN
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.escalate_overdue(now=late) == [step.pk]
    step.refresh_from_db()
    assert step.escalated_at == late
    entry = LedgerEntry.objects.get(event="step.overdue")
    assert entry.post_id == post.pk and entry.actor == "system"
    assert entry.payload == {
        "step": step.pk,
        "group": "Compliance reviewers",
        "due_at": step.due_at.isoformat(),
        "escalated_to": "Compliance managers",
    }
    # The group (rita, sam; not tom, who reviews Paris only) and the escalation group.
    assert sorted(m.to[0] for m in mailoutbox) == [
        "maya@example.com",
        "rita@example.com",
        "sam@example.com",
    ]
    assert all(m.subject.startswith(f"Overdue: post #{post.pk}") for m in mailoutbox)
    assert "Compliance managers may now decide on it as well." in mailoutbox[0].body

    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.escalate_overdue(now=late + H) == []
    assert LedgerEntry.objects.filter(event="step.overdue").count() == 1
    assert mailoutbox == []

    decision = approve(post, managers.maya)
    assert decision.step == step
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHING  # approved, so released


@pytest.mark.usefixtures("hours_apart")
def test_escalation_without_escalation_group_tells_the_group(
    world, in_review, mailoutbox, django_capture_on_commit_callbacks
):
    step = in_review.steps.get()
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.escalate_overdue(now=step.due_at) == [step.pk]  # due means due
    assert LedgerEntry.objects.get(event="step.overdue").payload["escalated_to"] is None
    assert sorted(m.to[0] for m in mailoutbox) == ["rita@example.com", "sam@example.com"]
    with pytest.raises(workflow.NotAllowed):
        approve(in_review, world.tom)  # escalation does not widen the team scope


def test_a_closed_step_is_never_escalated(world, in_review):
    step = in_review.steps.get()
    approve(in_review, world.rita)
    assert workflow.escalate_overdue(now=step.due_at + H) == []
    assert not LedgerEntry.objects.filter(event="step.overdue").exists()


def test_beat_tasks_run(world, in_review):
    from approvals import tasks

    tasks.escalate_overdue_steps.delay()
    tasks.flag_posts_at_risk.delay()
    assert in_review.steps.get().escalated_at is None  # not due yet


# --- Publish time at risk -------------------------------------------------------------------------


@pytest.mark.usefixtures("hours_apart")
def test_post_whose_publish_time_comes_before_its_due_time_is_flagged_before_the_slot_is_lost(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    post = submit(world, publish_at=timezone.now() + 2 * H)
    step = post.steps.get()  # due in 8 business hours: at least 8 hours from now
    now = step.activated_at
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.flag_publish_at_risk(now=now) == [post.pk]
    post.refresh_from_db()
    assert post.publish_at_risk_since == now
    assert post.state == State.IN_REVIEW
    entry = LedgerEntry.objects.get(event="post.publish_at_risk")
    assert entry.post_id == post.pk
    assert entry.payload["publish_at"] == post.publish_at.isoformat()
    assert entry.payload["estimated_finish"] == step.due_at.isoformat()
    assert entry.payload["steps"] == [{"step": step.pk, "group": "Compliance reviewers"}]
    assert sorted(m.to[0] for m in mailoutbox) == [
        "alice@example.com",
        "rita@example.com",
        "sam@example.com",
    ]
    assert all(f"Post #{post.pk} may miss its publish time" in m.subject for m in mailoutbox)

    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.flag_publish_at_risk(now=now + MIN) == []  # flagged once
    assert mailoutbox == []


@pytest.mark.usefixtures("hours_apart")
def test_post_with_time_to_spare_is_not_flagged_until_its_publish_time_is_near(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    post = submit(world, publish_at=timezone.now() + 3 * 24 * H)
    now = post.steps.get().activated_at  # 8 business hours never span more than 71 hours
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.flag_publish_at_risk(now=now) == []
    assert Post.objects.get(pk=post.pk).publish_at_risk_since is None
    assert mailoutbox == []
    # Still in review 30 minutes before the slot (inside the 60-minute margin): flagged.
    with django_capture_on_commit_callbacks(execute=True):
        assert workflow.flag_publish_at_risk(now=post.publish_at - 30 * MIN) == [post.pk]
    assert len(mailoutbox) == 3


@pytest.fixture
def legal_stage():
    """A second stage after the catch-all step: Legal, 4 calendar hours."""
    legal = Group.objects.create(name="Legal")
    rule = ApprovalRule.objects.create(name="Legal after compliance", condition={})
    RuleStep.objects.create(rule=rule, group=legal, stage=2, due_hours=4)


@pytest.mark.usefixtures("hours_apart")
def test_the_at_risk_sweep_costs_no_statement_per_post(world, request):
    """The beat looks at every post in review with a publish time, every minute: a campaign's
    thousands of them must not cost a statement each. A one-stage route is answered in SQL, the
    post not even read; one with a later stage to come is estimated in Python, its posts and
    their open steps read in two statements."""

    def statements(posts):
        for _ in range(posts):
            submit(world, publish_at=timezone.now() + 7 * 24 * H)  # time to spare
        with CaptureQueriesContext(connection) as captured:
            assert workflow.flag_publish_at_risk() == []
        return len(captured)

    assert statements(1) == statements(4) == 1
    request.getfixturevalue("legal_stage")
    assert statements(1) == statements(4) == 2


@pytest.mark.usefixtures("hours_apart", "legal_stage")
def test_a_later_stage_that_would_end_after_the_publish_time_is_flagged(world, mailoutbox):
    """The first stage is due before the slot, the second would end after it."""
    post = submit(world, publish_at=timezone.now() + 7 * 24 * H)
    first = post.steps.get(stage=1)
    Post.objects.filter(pk=post.pk).update(publish_at=first.due_at + 2 * H)

    assert workflow.flag_publish_at_risk(now=first.activated_at) == [post.pk]
    entry = LedgerEntry.objects.get(event="post.publish_at_risk")
    assert entry.payload["estimated_finish"] == (first.due_at + 4 * H).isoformat()


def test_posts_without_publish_time_or_out_of_review_are_never_flagged(world, in_review):
    approved = submit(world, publish_at=timezone.now() + H)
    approve(approved, world.rita)
    assert workflow.flag_publish_at_risk(now=timezone.now() + 10 * H) == []
    assert not LedgerEntry.objects.filter(event="post.publish_at_risk").exists()


@pytest.mark.parametrize("business_hours", [False, True])
def test_estimated_finish_chains_the_later_stages(world, business_hours):
    legal = Group.objects.create(name="Legal")
    rule = ApprovalRule.objects.create(name="Legal after compliance", condition={})
    RuleStep.objects.create(
        rule=rule, group=legal, stage=2, due_hours=4, business_hours=business_hours
    )
    RuleStep.objects.create(rule=rule, group=legal, stage=3, due_hours=None)
    post = submit(world)
    first = post.steps.get(stage=1)
    assert post.steps.get(stage=2).state == ReviewStep.State.WAITING
    now = first.activated_at
    end_of_first = first.due_at
    expected = add_business_hours(end_of_first, 4) if business_hours else end_of_first + 4 * H
    assert workflow.estimated_finish(post, now) == expected
    # An overdue active stage can only end now; the later stages are counted from there.
    later = end_of_first + 10 * H
    expected = add_business_hours(later, 4) if business_hours else later + 4 * H
    assert workflow.estimated_finish(post, later) == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("hours_apart")
def test_concurrent_escalation_runs_escalate_once(world, mailoutbox):
    from .conftest import at_once

    post = submit(world)
    step = post.steps.get()
    results = at_once(4, lambda n: workflow.escalate_overdue(now=step.due_at + MIN))
    assert sorted(results) == [[], [], [], [step.pk]]
    assert LedgerEntry.objects.filter(event="step.overdue").count() == 1
    overdue = [m.to[0] for m in mailoutbox if m.subject.startswith("Overdue")]
    assert sorted(overdue) == ["rita@example.com", "sam@example.com"]
