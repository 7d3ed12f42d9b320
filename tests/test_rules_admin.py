"""The compliance admin's approval rules: every change ledgered and versioned, bad conditions
refused next to the field, the last review rule kept, the simulator, claims released by an admin."""

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils.html import escape

from approvals import routing, workflow
from approvals.models import ApprovalRule, LedgerEntry, RuleStep, StepClaim

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:approvals_approvalrule_add")
SIMULATE_URL = reverse("admin:approvals_approvalrule_simulate")


@pytest.fixture
def legal(world):
    return Group.objects.create(name="Legal")


def rule_form(legal, *, condition='{"has_link": true}', quorum=1, rule=None, step=None, **fields):
    """The add/change form of a rule with one step of group Legal in stage 2, as a browser posts."""
    data = {
        "name": "Links go to legal",
        "description": "Links can promise returns.",
        "priority": "50",
        "enabled": "on",
        "condition": condition,
        "requires_review": "on",
        "steps-TOTAL_FORMS": "1",
        "steps-INITIAL_FORMS": "1" if step else "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
        "steps-0-stage": "2",
        "steps-0-group": legal.pk,
        "steps-0-quorum": str(quorum),
        "steps-0-due_hours": "24",
        "steps-0-escalation_group": "",
    }
    if step:
        data |= {"steps-0-id": step.pk, "steps-0-rule": rule.pk}
    return {**data, **fields}


def add_legal_rule(client, legal):
    response = client.post(ADD_URL, rule_form(legal))
    assert response.status_code == 302, response.content.decode()[:3000]
    return ApprovalRule.objects.get(name="Links go to legal")


def rule_entries():
    return list(LedgerEntry.objects.filter(event__startswith="admin.approvalrule.").order_by("seq"))


def test_rule_added_in_admin_is_ledgered_with_its_steps(client, world, legal):
    client.force_login(world.carla)
    rule = add_legal_rule(client, legal)

    assert rule.version == 1 and rule.condition == {"has_link": True}
    [entry] = rule_entries()
    assert entry.event == "admin.approvalrule.added" and entry.actor == "carla"
    assert entry.payload["object_id"] == rule.pk and entry.payload["before"] is None
    after = entry.payload["after"]
    assert after["version"] == 1 and after["condition"] == {"has_link": True}
    assert after["steps"] == [
        {
            "group": "Legal",
            "quorum": 1,
            "stage": 2,
            "due_hours": 24,
            "business_hours": False,
            "escalation_group": None,
        }
    ]


def test_rule_change_bumps_version_and_ledgers_before_and_after(client, world, legal):
    client.force_login(world.carla)
    rule = add_legal_rule(client, legal)
    step = rule.steps.get()
    change_url = reverse("admin:approvals_approvalrule_change", args=[rule.pk])

    response = client.post(change_url, rule_form(legal, quorum=2, rule=rule, step=step))

    assert response.status_code == 302, response.content.decode()[:3000]
    rule.refresh_from_db()
    assert rule.version == 2 and rule.steps.get().quorum == 2
    entry = rule_entries()[-1]
    assert entry.event == "admin.approvalrule.changed"
    before, after = entry.payload["before"], entry.payload["after"]
    assert (before["version"], after["version"]) == (1, 2)
    assert (before["steps"][0]["quorum"], after["steps"][0]["quorum"]) == (1, 2)
    # Routes computed from now on record the new version.
    route = routing.simulate(
        author=world.alice,
        account_ids=[world.lyon_sandbox.pk],
        text="Nouveau livret",
        link="https://example.com",
    )
    legal_step = next(s for s in route.steps if s.group == legal)
    assert legal_step.reasons[0]["version"] == 2 and legal_step.quorum == 2

    # Saving the form unchanged is no change: no new version, no entry.
    client.post(change_url, rule_form(legal, quorum=2, rule=rule, step=step))
    rule.refresh_from_db()
    assert rule.version == 2 and len(rule_entries()) == 2


@pytest.mark.parametrize(
    "condition, message",
    [
        ('{"colour": ["red"]}', 'condition: unknown test "colour"'),
        ('{"has_link": "yes"}', 'condition: "has_link" needs true or false'),
        ('{"all": {"has_link": true}}', 'condition: "all" needs a list of conditions'),
        ("{oops", "Enter a valid JSON."),
    ],
)
def test_bad_condition_is_shown_next_to_the_field_and_nothing_is_saved(
    client, world, legal, condition, message
):
    client.force_login(world.carla)
    entries = LedgerEntry.objects.count()

    response = client.post(ADD_URL, rule_form(legal, condition=condition))

    assert response.status_code == 200
    page = response.content.decode()
    assert escape(message) in page
    assert 'class="form-row errors field-condition' in page
    assert not ApprovalRule.objects.filter(name="Links go to legal").exists()
    assert LedgerEntry.objects.count() == entries


def test_rule_that_requires_review_needs_a_step(client, world, legal):
    client.force_login(world.carla)
    data = rule_form(legal) | {"steps-TOTAL_FORMS": "0"}

    response = client.post(ADD_URL, data)

    assert response.status_code == 200
    assert "A rule that requires review needs at least one step." in response.content.decode()
    assert not ApprovalRule.objects.filter(name="Links go to legal").exists()


def test_deleting_or_disabling_the_only_review_rule_is_refused(client, world):
    client.force_login(world.carla)
    default = ApprovalRule.objects.get(name="Default review")
    delete_url = reverse("admin:approvals_approvalrule_delete", args=[default.pk])

    response = client.post(delete_url, {"post": "yes"}, follow=True)
    assert "is the last enabled rule that requires review" in response.content.decode()
    response = client.post(
        reverse("admin:approvals_approvalrule_changelist"),
        {"action": "delete_selected", "_selected_action": [default.pk], "post": "yes"},
        follow=True,
    )
    assert "is the last enabled rule that requires review" in response.content.decode()
    response = client.post(
        reverse("admin:approvals_approvalrule_changelist"),
        {"action": "disable_rules", "_selected_action": [default.pk]},
        follow=True,
    )
    assert "is the last enabled rule that requires review" in response.content.decode()

    default.refresh_from_db()
    assert default.enabled and default.version == 1
    assert RuleStep.objects.filter(rule=default).exists()
    assert rule_entries() == []


def test_disabling_the_catch_all_warns_and_deleting_a_rule_is_ledgered(client, world, legal):
    client.force_login(world.carla)
    rule = add_legal_rule(client, legal)
    default = ApprovalRule.objects.get(name="Default review")
    changelist = reverse("admin:approvals_approvalrule_changelist")

    response = client.post(
        changelist, {"action": "disable_rules", "_selected_action": [default.pk]}, follow=True
    )

    assert "was the catch-all rule" in response.content.decode()
    default.refresh_from_db()
    assert not default.enabled and default.version == 2
    entry = rule_entries()[-1]
    assert entry.payload["before"]["enabled"] and not entry.payload["after"]["enabled"]

    # The legal rule is now the last enabled review rule: it may not go.
    response = client.post(
        reverse("admin:approvals_approvalrule_delete", args=[rule.pk]), {"post": "yes"}
    )
    assert ApprovalRule.objects.filter(pk=rule.pk).exists()
    client.post(changelist, {"action": "enable_rules", "_selected_action": [default.pk]})
    response = client.post(
        reverse("admin:approvals_approvalrule_delete", args=[rule.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not ApprovalRule.objects.filter(pk=rule.pk).exists()
    entry = rule_entries()[-1]
    assert entry.event == "admin.approvalrule.deleted" and entry.payload["after"] is None
    assert entry.payload["before"]["steps"][0]["group"] == "Legal"


def test_rule_list_reads_conditions_and_steps_and_links_the_simulator(client, world, legal):
    client.force_login(world.carla)
    add_legal_rule(client, legal)

    page = client.get(reverse("admin:approvals_approvalrule_changelist")).content.decode()

    assert "with a link" in page and "every post" in page
    assert "stage 2: Legal ×1, 24 hours" in page
    assert "stage 1: Compliance reviewers ×1, 8 business hours" in page
    assert SIMULATE_URL in page and "the stricter (larger) quorum" in page


def test_simulator_shows_each_step_and_the_rules_that_produced_it(client, world, legal):
    client.force_login(world.carla)
    page = client.get(SIMULATE_URL).content.decode()
    assert '<label for="id_accounts">' in page and '<label for="id_text">' in page
    assert "<h2>A post to route</h2>" in page and 'value="Simulate"' in page
    assert reverse("admin:approvals_approvalrule_changelist") in page  # the breadcrumbs

    post = {"author": world.alice.pk, "accounts": [world.lyon_sandbox.pk], "text": "Bonjour"}
    page = client.post(SIMULATE_URL, post).content.decode()
    assert "<td>Compliance reviewers</td>" in page
    assert "Default review (version 1)" in page and "8 business hours" in page

    rule = ApprovalRule.objects.create(name="Links go to legal", condition={"has_link": True})
    RuleStep.objects.create(rule=rule, group=legal, stage=2, quorum=2, due_hours=4)
    page = client.post(SIMULATE_URL, post | {"link": "https://example.com"}).content.decode()
    assert "<td>Compliance reviewers</td>" in page and "<td>Legal</td>" in page
    assert "Links go to legal (version 1)" in page and "Default review (version 1)" in page
    assert "<td>2</td>" in page and "4 hours" in page
    assert "with a link" in page  # the matched rules, with their conditions


def test_simulator_says_why_there_is_no_route(client, world):
    ApprovalRule.objects.update(enabled=False)
    client.force_login(world.carla)

    response = client.post(
        SIMULATE_URL, {"author": world.alice.pk, "accounts": [world.lyon_sandbox.pk], "text": "x"}
    )

    assert "No approval rule applies to this post" in response.content.decode()


def test_simulator_is_for_staff_who_may_see_rules(client, world):
    client.force_login(world.alice)
    assert client.get(SIMULATE_URL).status_code == 302  # to the admin login


def test_admin_releases_a_claim_through_the_workflow(client, world, in_review):
    claim = workflow.claim(in_review.pk, world.rita)
    client.force_login(world.carla)

    response = client.post(
        reverse("admin:approvals_stepclaim_delete", args=[claim.pk]), {"post": "yes"}
    )

    assert response.status_code == 302
    assert not StepClaim.objects.filter(pk=claim.pk).exists()
    entry = LedgerEntry.objects.get(event="step.claim_released")
    assert entry.actor == "carla" and entry.post_id == in_review.pk
    assert entry.payload["reviewer"] == "rita"


def test_review_steps_are_read_only_in_admin(client, world, in_review):
    client.force_login(world.carla)
    step = in_review.steps.get()

    page = client.get(reverse("admin:approvals_reviewstep_changelist")).content.decode()
    assert "Compliance reviewers" in page and "Default review (v1)" in page
    response = client.post(
        reverse("admin:approvals_reviewstep_change", args=[step.pk]), {"quorum": "5"}
    )
    assert response.status_code == 403


def test_deleting_the_catch_all_warns_and_an_empty_condition_means_every_post(client, world, legal):
    client.force_login(world.carla)
    response = client.post(ADD_URL, rule_form(legal, condition=""))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert ApprovalRule.objects.get(name="Links go to legal").condition == {}
    ApprovalRule.objects.filter(name="Links go to legal").update(condition={"has_link": True})
    default = ApprovalRule.objects.get(name="Default review")

    response = client.post(
        reverse("admin:approvals_approvalrule_delete", args=[default.pk]),
        {"post": "yes"},
        follow=True,
    )

    assert "was the catch-all rule" in response.content.decode()
    assert not ApprovalRule.objects.filter(pk=default.pk).exists()
    assert rule_entries()[-1].event == "admin.approvalrule.deleted"


def test_condition_naming_an_unknown_team_or_tag_saves_with_a_warning(client, world, legal):
    client.force_login(world.carla)
    condition = '{"any": [{"team": ["Lyon", "Lyonn"]}, {"not": {"tag": "Nope"}}]}'

    response = client.post(ADD_URL, rule_form(legal, condition=condition), follow=True)

    page = response.content.decode()
    assert "names what does not exist: team “lyonn”, tag “nope”" in page
    assert "“lyon”" not in page
    assert ApprovalRule.objects.filter(name="Links go to legal").exists()


def test_bulk_delete_of_tags_in_the_admin_is_ledgered_one_by_one(client, world):
    from approvals.models import Tag

    tags = [Tag.objects.create(name=name) for name in ("Livret A", "PEA")]
    client.force_login(world.carla)
    response = client.post(
        reverse("admin:approvals_tag_changelist"),
        {"action": "delete_selected", "_selected_action": [t.pk for t in tags], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Tag.objects.filter(pk__in=[t.pk for t in tags]).exists()
    deleted = LedgerEntry.objects.filter(event="admin.tag.deleted")
    assert sorted(e.payload["object"] for e in deleted) == ["Livret A", "PEA"]
