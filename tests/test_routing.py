"""Routing, table-driven: approval rules -> the frozen review steps of a revision, and how they run.

Each case installs a few rules from small specs (`Rule`, `Step`), submits alice's Lyon post, checks
the route it got, then plays a script of decisions with the state expected after each one. The
post has no publish time: the decision that completes the route approves it and releases it in the
same transaction, so it is then "publishing".
"""

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from guardian.shortcuts import assign_perm

from approvals import routing, workflow
from approvals.conditions import ConditionError, Facts, parse
from approvals.models import (
    ApprovalRule,
    LedgerEntry,
    Post,
    ReviewStep,
    RuleStep,
    StepClaim,
    Tag,
)
from approvals.models.posts import State

from .conftest import make_user, released_with_approval

pytestmark = pytest.mark.django_db

REVIEWERS = "Compliance reviewers"  # the catch-all rule's group: rita, sam (and tom, Paris)
LEGAL = "Legal"  # lena, leo
MARKETING = "Marketing"  # mia
DEFAULT_RULE = "Default review"


@dataclass
class Step:
    group: str
    quorum: int = 1
    stage: int = 1
    due_hours: int | None = None
    business_hours: bool = False


@dataclass
class Rule:
    name: str
    steps: list = field(default_factory=list)
    condition: dict = field(default_factory=dict)
    priority: int = 100
    enabled: bool = True
    requires_review: bool = True
    allow_multiple: bool = False
    description: str = ""


@pytest.fixture
def crew(world, django_user_model):
    """Two more reviewer groups for team Lyon: Legal (lena, leo) and Marketing (mia)."""
    crew = SimpleNamespace(**vars(world))
    for group_name, names in ((LEGAL, ("lena", "leo")), (MARKETING, ("mia",))):
        group = Group.objects.create(name=group_name)
        for name in names:
            user = make_user(django_user_model, name)
            assign_perm("approvals.review_team", user, world.lyon)
            group.user_set.add(user)
            setattr(crew, name, user)
    return crew


def install(rules, keep_default=False):
    """Create the rules of a case; the shipped catch-all rule stays on only when asked."""
    if not keep_default:
        ApprovalRule.objects.filter(name=DEFAULT_RULE).update(enabled=False)
    created = []
    for spec in rules:
        rule = ApprovalRule.objects.create(
            name=spec.name,
            description=spec.description or f"Why {spec.name} exists.",
            condition=spec.condition,
            priority=spec.priority,
            enabled=spec.enabled,
            requires_review=spec.requires_review,
            allow_multiple_steps_per_reviewer=spec.allow_multiple,
        )
        for step in spec.steps:
            RuleStep.objects.create(
                rule=rule,
                group=Group.objects.get(name=step.group),
                quorum=step.quorum,
                stage=step.stage,
                due_hours=step.due_hours,
                business_hours=step.business_hours,
            )
        created.append(rule)
    return created


def new_post(world, text="Nos conseillers vous accueillent samedi.", **extra):
    return workflow.create_post(
        world.alice, text=text, account_ids=[world.lyon_sandbox.pk], **extra
    )


def route_of(post):
    return [
        (s.group.name, s.quorum, s.stage, s.state, [r["rule"] for r in s.reasons])
        for s in ReviewStep.objects.filter(revision=post.current_revision).order_by(
            "stage", "group__name"
        )
    ]


def snapshot(post):
    post = Post.objects.get(pk=post.pk)
    states = {s.group.name: s.state for s in post.steps.filter(revision=post.current_revision)}
    return {"post": post.state, **states}


def decide(post, who, outcome="approve", step_id=None):
    post = Post.objects.get(pk=post.pk)
    return workflow.decide(
        post.pk,
        who,
        outcome=outcome,
        reason="" if outcome == "approve" else "Because.",
        revision_hash=post.current_revision.content_hash,
        step_id=step_id,
    )


def page(client, user, post):
    client.force_login(user)
    response = client.get(reverse("post_detail", args=[post.pk]))
    assert response.status_code == 200
    return response.content.decode()


A, W = "active", "waiting"

# id, rules, keep the catch-all?, route after submit, script [(who, expected after)]
CASES = [
    pytest.param(
        [Rule("Compliance", [Step(REVIEWERS)])],
        False,
        [(REVIEWERS, 1, 1, A, ["Compliance"])],
        [("rita", {"post": "publishing", REVIEWERS: "approved"})],
        id="single step",
    ),
    pytest.param(
        [Rule("Two groups", [Step(REVIEWERS), Step(LEGAL)])],
        False,
        [(REVIEWERS, 1, 1, A, ["Two groups"]), (LEGAL, 1, 1, A, ["Two groups"])],
        [
            ("lena", {"post": "in_review", REVIEWERS: A, LEGAL: "approved"}),
            ("rita", {"post": "publishing", REVIEWERS: "approved", LEGAL: "approved"}),
        ],
        id="two parallel groups",
    ),
    pytest.param(
        [Rule("Two stages", [Step(REVIEWERS, stage=1), Step(LEGAL, stage=2)])],
        False,
        [(REVIEWERS, 1, 1, A, ["Two stages"]), (LEGAL, 1, 2, W, ["Two stages"])],
        [
            ("lena", (workflow.NotAllowed, "This post waits for Compliance reviewers")),
            ("rita", {"post": "in_review", REVIEWERS: "approved", LEGAL: A}),
            ("lena", {"post": "publishing", REVIEWERS: "approved", LEGAL: "approved"}),
        ],
        id="two stages",
    ),
    pytest.param(
        [Rule("Four eyes", [Step(REVIEWERS, quorum=2)])],
        False,
        [(REVIEWERS, 2, 1, A, ["Four eyes"])],
        [
            ("rita", {"post": "in_review", REVIEWERS: A}),
            ("rita", (workflow.Conflict, "You already decided on this step")),
            ("sam", {"post": "publishing", REVIEWERS: "approved"}),
        ],
        id="quorum of two",
    ),
    pytest.param(
        [
            Rule("Base", [Step(REVIEWERS, due_hours=24)]),
            Rule("Big tickets", [Step(REVIEWERS, quorum=2, due_hours=4)]),
        ],
        False,
        [(REVIEWERS, 2, 1, A, ["Base", "Big tickets"])],
        [
            ("rita", {"post": "in_review", REVIEWERS: A}),
            ("sam", {"post": "publishing", REVIEWERS: "approved"}),
        ],
        id="overlapping rules: stricter quorum wins",
    ),
    pytest.param(
        [
            Rule("Compliance", [Step(REVIEWERS)]),
            Rule("Legal check", [Step(LEGAL)], enabled=False),
        ],
        False,
        [(REVIEWERS, 1, 1, A, ["Compliance"])],
        [("rita", {"post": "publishing", REVIEWERS: "approved"})],
        id="disabled rule ignored",
    ),
    pytest.param(
        [Rule("LinkedIn only", [Step(LEGAL)], condition={"network": ["linkedin"]})],
        True,
        [(REVIEWERS, 1, 1, A, [DEFAULT_RULE])],
        [("rita", {"post": "publishing", REVIEWERS: "approved"})],
        id="rule that does not match ignored",
    ),
    pytest.param(
        [],
        True,
        [(REVIEWERS, 1, 1, A, [DEFAULT_RULE])],
        [
            ("tom", (workflow.NotAllowed, "not allowed")),  # in the group, but a Paris reviewer
            ("rita", {"post": "publishing", REVIEWERS: "approved"}),
        ],
        id="catch-all only",
    ),
    pytest.param(
        [Rule("Pre-approved template", priority=2000, requires_review=False)],
        True,
        [(REVIEWERS, 1, 1, A, [DEFAULT_RULE])],
        [("rita", {"post": "publishing", REVIEWERS: "approved"})],
        id="exempt rule with lower priority ignored",
    ),
]


@pytest.mark.parametrize("rules, keep_default, route, script", CASES)
def test_route(crew, rules, keep_default, route, script):
    install(rules, keep_default)
    post = workflow.submit(new_post(crew).pk, crew.alice)
    assert route_of(post) == route
    for who, expected in script:
        if isinstance(expected, tuple):
            error, message = expected
            before = (LedgerEntry.objects.count(), snapshot(post))
            with pytest.raises(error, match=message):
                decide(post, getattr(crew, who))
            assert (LedgerEntry.objects.count(), snapshot(post)) == before
        else:
            decide(post, getattr(crew, who))
            assert snapshot(post) == expected, who
    # The last decision approved the post and released it, in its transaction.
    approved, _ = released_with_approval(post)
    assert approved.actor == script[-1][0]


def test_overlapping_rules_keep_the_earliest_due_time_and_separate_stages(crew):
    install(
        [
            Rule("Base", [Step(REVIEWERS, due_hours=24), Step(LEGAL, stage=2)]),
            Rule("Big tickets", [Step(REVIEWERS, quorum=2, due_hours=4), Step(LEGAL, stage=3)]),
        ]
    )
    post = workflow.submit(new_post(crew).pk, crew.alice)
    assert route_of(post) == [
        (REVIEWERS, 2, 1, A, ["Base", "Big tickets"]),
        (LEGAL, 1, 2, W, ["Base"]),  # same group, another stage: another step
        (LEGAL, 1, 3, W, ["Big tickets"]),
    ]
    step = post.steps.get(stage=1)
    assert step.due_hours == 4
    assert step.due_at == step.activated_at + timezone.timedelta(hours=4)
    versions = [(r["rule"], r["version"]) for r in step.reasons]
    assert versions == [("Base", 1), ("Big tickets", 1)]
    submitted = LedgerEntry.objects.get(event="post.submitted", post_id=post.pk)
    assert submitted.payload["route"]["steps"][0]["rules"] == step.reasons


@pytest.mark.parametrize(
    "submitted, kept",
    [
        # Friday 17:00: 8 business hours end Monday 16:00, after 24 calendar hours.
        ("2026-11-27T17:00", (24, False)),
        # Monday 09:00: 8 business hours end at 17:00 the same day.
        ("2026-11-23T09:00", (8, True)),
    ],
)
def test_overlapping_due_times_compare_real_deadlines(crew, submitted, kept):
    from datetime import datetime

    install(
        [
            Rule("Business", [Step(REVIEWERS, due_hours=8, business_hours=True)]),
            Rule("Calendar", [Step(REVIEWERS, due_hours=24)]),
        ]
    )
    now = datetime.fromisoformat(submitted).replace(tzinfo=timezone.get_default_timezone())
    facts = Facts(team="Lyon", networks=frozenset({"sandbox"}), account_ids=frozenset())
    (step,) = routing.compute_route(facts, now=now).steps
    assert (step.due_hours, step.business_hours) == kept


def test_second_stage_opens_only_when_the_first_is_approved(crew):
    install([Rule("Two stages", [Step(REVIEWERS), Step(LEGAL, stage=2, due_hours=2)])])
    post = workflow.submit(new_post(crew).pk, crew.alice)
    legal = post.steps.get(group__name=LEGAL)
    assert (legal.state, legal.activated_at, legal.due_at) == (W, None, None)
    assert workflow.eligible_steps(post, crew.lena) == []
    decide(post, crew.rita)
    legal.refresh_from_db()
    assert legal.state == A and legal.activated_at is not None
    assert legal.due_at == legal.activated_at + timezone.timedelta(hours=2)
    opened = LedgerEntry.objects.get(event="route.stage_opened", post_id=post.pk)
    assert opened.payload == {"stage": 2, "steps": [legal.pk]}


def test_exempt_rule_with_higher_priority_approves_at_once(crew):
    install([Rule("Pre-approved template", priority=10, requires_review=False)], keep_default=True)
    post = workflow.submit(new_post(crew).pk, crew.alice)
    assert post.state == State.PUBLISHING  # approved, and released with no publish time
    assert post.approved_revision_id == post.current_revision_id
    assert route_of(post) == []
    approved, _ = released_with_approval(post)
    assert approved.payload["exempted_by"] == "Pre-approved template"
    route = LedgerEntry.objects.get(event="post.submitted", post_id=post.pk).payload["route"]
    assert route["review_required"] is False
    assert route["exempted_by"] == "Pre-approved template"
    assert [r["rule"] for r in route["matched_rules"]] == ["Pre-approved template", DEFAULT_RULE]


def test_no_enabled_rule_matches_submit_is_refused_and_nothing_changes(crew):
    install(
        [
            Rule("LinkedIn only", [Step(LEGAL)], condition={"network": ["linkedin"]}),
            Rule("Everything, but off", [Step(REVIEWERS)], enabled=False),
        ]
    )
    post = new_post(crew)
    before = (LedgerEntry.objects.count(), ReviewStep.objects.count())
    with pytest.raises(workflow.Conflict, match="No approval rule applies to this post"):
        workflow.submit(post.pk, crew.alice)
    assert (LedgerEntry.objects.count(), ReviewStep.objects.count()) == before
    post.refresh_from_db()
    assert post.state == State.DRAFT and post.submitted_at is None


def test_rules_that_require_review_but_name_nobody_are_refused(crew):
    install([Rule("Empty", [])])
    with pytest.raises(workflow.Conflict, match=r"require review but name no reviewers"):
        workflow.submit(new_post(crew).pk, crew.alice)


def test_rule_edited_during_review_keeps_the_frozen_route(crew, client):
    rule = ApprovalRule.objects.get(name=DEFAULT_RULE)
    first = workflow.submit(new_post(crew).pk, crew.alice)
    # A compliance admin edits the rule (the admin saves a new version): quorum 2, Legal after.
    rule.steps.update(quorum=2)
    RuleStep.objects.create(rule=rule, group=Group.objects.get(name=LEGAL), stage=2)
    ApprovalRule.objects.filter(pk=rule.pk).update(version=F("version") + 1)

    assert route_of(first) == [(REVIEWERS, 1, 1, A, [DEFAULT_RULE])]
    assert first.steps.get().reasons == [{"rule_id": rule.pk, "rule": DEFAULT_RULE, "version": 1}]
    html = page(client, crew.alice, first)
    assert "the rule has changed since, now version 2" in html

    second = workflow.submit(new_post(crew, text="Another one").pk, crew.alice)
    assert route_of(second) == [
        (REVIEWERS, 2, 1, A, [DEFAULT_RULE]),
        (LEGAL, 1, 2, W, [DEFAULT_RULE]),
    ]
    assert {r["version"] for s in second.steps.all() for r in s.reasons} == {2}

    decide(first, crew.rita)  # the frozen quorum of one still holds
    assert snapshot(first) == {"post": "publishing", REVIEWERS: "approved"}


def test_rule_edit_applies_to_the_next_revision_of_a_post(crew):
    post = workflow.submit(new_post(crew).pk, crew.alice)
    decide(post, crew.rita, outcome="request_changes")
    rule = ApprovalRule.objects.get(name=DEFAULT_RULE)
    rule.steps.update(quorum=2)
    ApprovalRule.objects.filter(pk=rule.pk).update(version=F("version") + 1)
    workflow.edit_post(
        post.pk, crew.alice, text="Capital at risk.", account_ids=[crew.lyon_sandbox.pk]
    )
    post = workflow.submit(post.pk, crew.alice)
    assert route_of(post) == [(REVIEWERS, 2, 1, A, [DEFAULT_RULE])]
    first_revision = post.revisions.get(number=1)
    assert list(first_revision.steps.values_list("quorum", "state")) == [(1, "changes_requested")]


# --- Conditions, each kind, against routing.compute_route(Facts(...)) -----------------------------


def facts(**changes):
    base = {
        "team": "Lyon",
        "networks": frozenset({"sandbox"}),
        "account_ids": frozenset({7}),
        "tags": frozenset(),
        "has_link": False,
        "has_media": False,
        "length": 100,
        "findings": (),
    }
    return Facts(**{**base, **changes})


CONDITIONS = [
    ({}, {}, True),
    ({"network": ["linkedin", "x"]}, {"networks": frozenset({"x"})}, True),
    ({"network": "LinkedIn"}, {"networks": frozenset({"linkedin"})}, True),
    ({"network": ["linkedin"]}, {}, False),
    ({"account": [7, 9]}, {}, True),
    ({"account": 8}, {}, False),
    ({"team": ["lyon"]}, {}, True),
    ({"team": "Paris"}, {}, False),
    ({"tag": ["Crypto fund"]}, {"tags": frozenset({"crypto FUND", "Other"})}, True),
    ({"tag": ["Crypto fund"]}, {"tags": frozenset({"Other"})}, False),
    ({"has_link": True}, {"has_link": True}, True),
    ({"has_link": True}, {}, False),
    ({"has_link": False}, {}, True),
    ({"has_media": True}, {"has_media": True}, True),
    ({"length_over": 280}, {"length": 281}, True),
    ({"length_over": 280}, {"length": 280}, False),
    ({"finding": {"severity": "block"}}, {"findings": (("promise", "block"),)}, True),
    ({"finding": {"severity": "block"}}, {"findings": (("promise", "warn"),)}, False),
    ({"finding": {"category": "promise"}}, {"findings": (("promise", "info"),)}, True),
    (
        {"finding": {"category": "promise", "severity": "warn"}},
        {"findings": (("promise", "info"), ("risk", "warn"))},
        False,
    ),
    ({"all": [{"team": ["Lyon"]}, {"has_link": True}]}, {"has_link": True}, True),
    ({"all": [{"team": ["Lyon"]}, {"has_link": True}]}, {}, False),
    ({"any": [{"team": ["Paris"]}, {"length_over": 50}]}, {}, True),
    ({"any": [{"team": ["Paris"]}, {"length_over": 500}]}, {}, False),
    ({"not": {"team": ["Paris"]}}, {}, True),
    ({"not": {"team": ["Lyon"]}}, {}, False),
    (
        {"all": [{"any": [{"network": ["x"]}, {"tag": ["fund"]}]}, {"not": {"has_link": True}}]},
        {"tags": frozenset({"fund"})},
        True,
    ),
    (
        {"all": [{"any": [{"network": ["x"]}, {"tag": ["fund"]}]}, {"not": {"has_link": True}}]},
        {"tags": frozenset({"fund"}), "has_link": True},
        False,
    ),
]


@pytest.mark.parametrize(
    "condition, changes, matches", CONDITIONS, ids=[str(c[0]) + str(c[1]) for c in CONDITIONS]
)
def test_condition_kind(crew, condition, changes, matches):
    install([Rule("Under test", [Step(LEGAL)], condition=condition)], keep_default=True)
    route = routing.compute_route(facts(**changes))
    groups = [step.group.name for step in route.steps]
    assert (LEGAL in groups) is matches
    assert groups[0] == REVIEWERS  # the catch-all still applies
    assert parse(condition).matches(facts(**changes)) is matches
    assert parse(condition).describe()


PARSE_ERRORS = [
    ({"netwrk": ["x"]}, 'condition: unknown test "netwrk"'),
    ({"all": [{"network": ["x"]}, {"netwrk": ["x"]}]}, 'condition.all[1]: unknown test "netwrk"'),
    ({"not": {"any": [{"length_over": -1}]}}, 'condition.not.any[0]: "length_over" needs'),
    ({"any": {"network": ["x"]}}, 'condition: "any" needs a list of conditions'),
    ({"network": []}, 'condition: "network" needs a name or a list of names'),
    ({"team": [3]}, 'condition: "team" needs a name or a list of names'),
    ({"account": ["3"]}, 'condition: "account" needs an account id'),
    ({"account": True}, 'condition: "account" needs an account id'),
    ({"has_link": "yes"}, 'condition: "has_link" needs true or false'),
    ({"length_over": True}, 'condition: "length_over" needs a number'),
    ({"finding": {"severity": "fatal"}}, 'condition: "severity" must be one of block, warn, info'),
    ({"finding": {"colour": "red"}}, 'condition: "finding" needs'),
    ({"network": ["x"], "team": ["y"]}, "condition: one test per object"),
    (["network"], "condition: expected an object"),
    ({"all": [{"not": "x"}]}, "condition.all[0].not: expected an object"),
]


@pytest.mark.parametrize("condition, message", PARSE_ERRORS, ids=[m for _, m in PARSE_ERRORS])
def test_condition_errors_name_the_path(condition, message):
    with pytest.raises(ConditionError) as error:
        parse(condition)
    assert str(error.value).startswith(message), str(error.value)


def test_rule_with_a_bad_condition_does_not_validate(crew):
    from django.core.exceptions import ValidationError

    rule = ApprovalRule(name="Typo", condition={"all": [{"team": ["Lyon"]}, {"netwrk": ["x"]}]})
    with pytest.raises(ValidationError) as error:
        rule.full_clean()
    assert 'condition.all[1]: unknown test "netwrk"' in str(error.value.message_dict["condition"])


# --- Tags chosen in the editor route the post -------------------------------------------------


def test_tags_chosen_in_the_editor_are_saved_shown_and_routed(crew, client):
    fund = Tag.objects.create(name="Crypto fund", kind=Tag.Kind.PRODUCT)
    Tag.objects.create(name="Spring campaign", kind=Tag.Kind.CAMPAIGN)
    install(
        [Rule("Crypto needs legal", [Step(LEGAL)], condition={"tag": ["crypto fund"]})],
        keep_default=True,
    )
    client.force_login(crew.alice)
    form = client.get(reverse("post_create")).content.decode()
    assert "<legend>Tags</legend>" in form and "Spring campaign" in form
    response = client.post(
        reverse("post_create"),
        {"text": "Our new fund.", "accounts": [crew.lyon_sandbox.pk], "tags": [fund.pk]},
    )
    assert response.status_code == 302
    post = Post.objects.latest("pk")
    assert list(post.current_revision.tags.all()) == [fund]
    edit = client.get(reverse("post_edit", args=[post.pk])).content.decode()
    assert f'value="{fund.pk}" id="id_tags_' in edit and "checked" in edit
    html = page(client, crew.alice, post)
    assert "Crypto fund" in html

    post = workflow.submit(post.pk, crew.alice)
    assert [g for g, *_ in route_of(post)] == [REVIEWERS, LEGAL]
    # In review, the tags are frozen with the revision: the editor refuses to change them
    response = client.post(
        reverse("post_edit", args=[post.pk]),
        {"text": "Our new fund.", "accounts": [crew.lyon_sandbox.pk]},
    )
    assert response.status_code == 409  # in review: not editable


def test_unknown_tag_is_refused_next_to_the_field(crew, client):
    client.force_login(crew.alice)
    before = Post.objects.count()
    response = client.post(
        reverse("post_create"),
        {"text": "Hello", "accounts": [crew.lyon_sandbox.pk], "tags": [999999]},
    )
    assert response.status_code == 400
    assert "One of the chosen tags does not exist." in response.content.decode()
    assert Post.objects.count() == before


# --- The route on the post page ---------------------------------------------------------------


def test_post_page_shows_the_route_by_stage_with_who_approved_and_why(crew, client):
    install(
        [
            Rule(
                "Marketing claims",
                [Step(REVIEWERS, quorum=2, due_hours=8), Step(MARKETING)],
                description="Promotional wording needs marketing.",
            ),
            Rule("Legal last", [Step(LEGAL, stage=2, due_hours=4)]),
        ]
    )
    post = workflow.submit(new_post(crew).pk, crew.alice)
    decide(post, crew.rita)
    for viewer in (crew.alice, crew.sam, crew.lena, crew.carla):
        html = page(client, viewer, post)
        assert "Stage 1 — in parallel" in html
        assert "Stage 2</h3>" in html
        assert "1 of 2 approvals: rita at" in html
        assert "Still missing: 1 more approval from Compliance reviewers." in html
        assert "Still missing: 1 more approval from Legal, once stage 1 is approved." in html
        assert "<strong>Marketing claims</strong> (version 1): Promotional wording" in html
        assert "left)" in html  # due time with the time left
        assert "4 hours to decide once it opens" in html


def test_post_page_shows_overdue_escalated_and_claimed_steps(crew, client):
    install([Rule("Compliance", [Step(REVIEWERS, due_hours=1)])])
    post = workflow.submit(new_post(crew).pk, crew.alice)
    workflow.claim(post.pk, crew.rita)
    past = timezone.now() - timezone.timedelta(hours=2)
    post.steps.update(
        due_at=past, escalated_at=past, escalation_group=Group.objects.get(name=LEGAL)
    )
    html = page(client, crew.alice, post)
    assert "Overdue: was due" in html
    assert "Escalated to Legal" in html
    assert "1 more approval from Compliance reviewers or Legal" in html
    claimed = timezone.localtime(StepClaim.objects.get().claimed_at)
    assert "In review by rita since <time datetime=" in html
    assert f">{claimed:%H:%M}</time>" in html


def test_post_page_says_which_rule_exempted_the_route(crew, client):
    install(
        [
            Rule(
                "Pre-approved template",
                priority=10,
                requires_review=False,
                description="Unchanged texts from the approved library.",
            )
        ],
        keep_default=True,
    )
    post = workflow.submit(new_post(crew).pk, crew.alice)
    html = page(client, crew.alice, post)
    assert "No review needed: the rule <strong>Pre-approved template</strong>" in html
    assert "Unchanged texts from the approved library." in html


def test_post_page_flags_a_publish_time_at_risk(crew, client):
    post = new_post(crew, publish_at=timezone.now() + timezone.timedelta(hours=1))
    post = workflow.submit(post.pk, crew.alice)
    assert "Publish time at risk" not in page(client, crew.alice, post)
    Post.objects.filter(pk=post.pk).update(publish_at_risk_since=timezone.now())
    assert "Publish time at risk" in page(client, crew.alice, post)
    assert "Publish time at risk" in page(client, crew.rita, post)


def _count_page_queries(client, user, post):
    client.force_login(user)
    url = reverse("post_detail", args=[post.pk])
    client.get(url)  # warm caches (content types, the reviewer's last seen revision)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_post_page_query_count_does_not_grow_with_steps_decisions_and_claims(crew, client):
    small = workflow.submit(new_post(crew).pk, crew.alice)
    install([Rule("Big", [Step(REVIEWERS, quorum=3), Step(LEGAL, quorum=2), Step(MARKETING)])])
    crew.mia.groups.add(Group.objects.get(name=REVIEWERS))  # eligible for two steps
    big = workflow.submit(new_post(crew, text="Big one").pk, crew.alice)
    viewers = [crew.alice, crew.carla, crew.sam, crew.mia, crew.lena]
    before = {user: _count_page_queries(client, user, big) for user in viewers}
    for user in (crew.alice, crew.carla):  # one step or three: the same
        assert _count_page_queries(client, user, small) == before[user]
    # Claims are read only when there are some: from one claim on, the count holds.
    workflow.claim(big.pk, crew.lena)
    before = {user: _count_page_queries(client, user, big) for user in viewers}
    decide(big, crew.rita)
    decide(big, crew.leo)
    workflow.claim(big.pk, crew.sam)
    workflow.claim(big.pk, crew.mia)
    after = {user: _count_page_queries(client, user, big) for user in viewers}
    assert after == before
