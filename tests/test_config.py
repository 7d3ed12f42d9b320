"""The configuration snapshot (approvals.config): one query when nothing changed; any change, by
any path (model, QuerySet.update(), raw SQL, the admin), seen by the very next check, route or
submit; a rolled-back change never poisons the cache; no version row means always reloading."""

import re

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import prefetch_related_objects
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import config, policy, routing, workflow
from approvals.models import (
    ApprovalRule,
    ConfigVersion,
    Disclaimer,
    LexiconEntry,
    NetworkRule,
    RuleStep,
    Team,
)
from approvals.policy import Finding, Subject

pytestmark = pytest.mark.django_db

FRENCH = "Nous vous accueillons dans notre agence samedi."  # French by its common words
DEFAULT_RULE = "Default review"  # migration 0003, to "Compliance reviewers"


def raw(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def change(how, model, lookup, **values):
    """Write `values` on the rows matching `lookup` (plain columns) through the model, through
    QuerySet.update(), or in raw SQL."""
    if how == "model":
        row = model.objects.get(**lookup)
        for name, value in values.items():
            setattr(row, name, value)
        row.save()
    elif how == "update":
        model.objects.filter(**lookup).update(**values)
    else:
        column = lambda name: model._meta.get_field(name).column  # noqa: E731
        sets = ", ".join(f"{column(name)} = %s" for name in values)
        where = " AND ".join(f"{column(name)} = %s" for name in lookup)
        raw(
            f"UPDATE {model._meta.db_table} SET {sets} WHERE {where}",
            [*values.values(), *lookup.values()],
        )


def ready(post):
    """The post's revision as workflow.submit hands it to the checks and the route."""
    revision = post.current_revision
    revision.post = post
    prefetch_related_objects([revision], "accounts", "tags", "post__team")
    return revision


def route_of(revision):
    return [(step.group.name, step.quorum) for step in routing.route_for_revision(revision).steps]


def codes(subject):
    return {f.code for f in policy.check(subject)}


def missing(disclaimer, team=""):
    """Whether the checks report `disclaimer` missing from a French text of `team`."""
    subject = Subject(text=FRENCH, networks=frozenset({"sandbox"}), team=team)
    return any(f.data.get("disclaimer_id") == disclaimer.pk for f in policy.check(subject))


# --- One query ------------------------------------------------------------------------------------


def test_checks_and_route_of_a_submit_read_the_configuration_in_one_query(
    draft, django_assert_num_queries
):
    revision = ready(draft)
    config.current()  # warm
    with django_assert_num_queries(1):  # the version; no lexicon, rules, disclaimers, findings
        with config.using():
            findings = policy.check_revision(revision)
            route = routing.route_for_revision(revision, findings=findings)
    assert [(s.group.name, s.quorum) for s in route.steps] == [("Compliance reviewers", 1)]
    with django_assert_num_queries(2):  # each on its own reads the version
        routing.route_for_revision(revision, findings=policy.check_revision(revision))


def test_route_uses_the_findings_given_instead_of_reading_them(draft, world):
    legal = Group.objects.create(name="Legal")
    rule = ApprovalRule.objects.create(
        name="Performance to legal", condition={"finding": {"category": "performance"}}
    )
    RuleStep.objects.create(rule=rule, group=legal, stage=2)
    revision = ready(draft)
    performance = Finding(
        code="lexicon.performance", category="performance", severity="warn", message=""
    )
    with CaptureQueriesContext(connection) as queries:
        route = routing.route_for_revision(revision, findings=[performance])
    assert "approvals_revisionfinding" not in " ".join(q["sql"] for q in queries)
    assert [s.group.name for s in route.steps] == ["Compliance reviewers", "Legal"]
    assert route_of(revision) == [("Compliance reviewers", 1)]  # none frozen with it


# --- Every change seen at once --------------------------------------------------------------------


@pytest.fixture
def scenarios(world, draft):
    """name -> (model, lookup, values, observe): observe() changes when the values are written."""
    legal = Group.objects.create(name="Legal")
    rule = ApprovalRule.objects.create(name="Legal too", enabled=False)
    RuleStep.objects.create(rule=rule, group=legal, stage=2, quorum=2)
    reviewers = Group.objects.get(name="Compliance reviewers")
    default_rule = ApprovalRule.objects.get(name=DEFAULT_RULE)
    entry = LexiconEntry.objects.create(
        term="zorglub", language="fr", category="guarantee", severity="block", explanation="."
    )
    ours = Disclaimer.objects.create(name="Ours", language="fr", text="Mention ABC.", enabled=False)
    scoped = Disclaimer.objects.create(name="Lyon only", language="fr", text="Mention DEF.")
    scoped.teams.add(world.lyon)
    revision = ready(draft)
    return {
        "rule": (ApprovalRule, {"id": rule.pk}, {"enabled": True}, lambda: route_of(revision)),
        "rule step": (
            RuleStep,
            {"rule_id": default_rule.pk},
            {"quorum": 3},
            lambda: route_of(revision),
        ),
        "group": (Group, {"id": reviewers.pk}, {"name": "Compliance"}, lambda: route_of(revision)),
        "network rule": (
            NetworkRule,
            {"network": "x"},
            {"max_length": 10},
            lambda: codes(Subject(text="a" * 50, networks=frozenset({"x"}))),
        ),
        "lexicon entry": (
            LexiconEntry,
            {"id": entry.pk},
            {"term": "bidulon"},
            lambda: codes(Subject(text="Un bidulon.")),
        ),
        "disclaimer": (Disclaimer, {"id": ours.pk}, {"enabled": True}, lambda: missing(ours)),
        "disclaimer teams": (
            Disclaimer.teams.through,
            {"disclaimer_id": scoped.pk},
            {"team_id": world.paris.pk},
            lambda: missing(scoped, team="Lyon"),
        ),
        "team": (Team, {"id": world.lyon.pk}, {"name": "Lyon 2"}, lambda: missing(scoped, "Lyon")),
    }


@pytest.mark.parametrize("how", ["model", "update", "raw SQL"])
@pytest.mark.parametrize(
    "what",
    [
        "rule",
        "rule step",
        "group",
        "network rule",
        "lexicon entry",
        "disclaimer",
        "disclaimer teams",
        "team",
    ],
)
def test_a_change_is_seen_by_the_next_check_or_route(scenarios, what, how):
    model, lookup, values, observe = scenarios[what]
    before = observe()
    assert observe() == before  # cached, and stable
    change(how, model, lookup, **values)
    assert observe() != before


def test_inserts_and_deletes_are_seen(db):
    def found():
        return codes(Subject(text="Un bidulon."))

    assert "lexicon.guarantee" not in found()
    raw(
        "INSERT INTO approvals_lexiconentry (term, language, category, severity, explanation,"
        " alternative, exceptions, enabled) VALUES ('bidulon', 'fr', 'guarantee', 'block', '.',"
        " '', '', %s)",
        [True],
    )
    assert "lexicon.guarantee" in found()
    LexiconEntry.objects.filter(term="bidulon").delete()
    assert "lexicon.guarantee" not in found()


@pytest.mark.postgres
def test_truncate_is_seen(db):
    assert "x" in config.current().network_rules
    raw("TRUNCATE approvals_networkrule")
    assert dict(config.current().network_rules) == {}


def test_admin_edits_are_seen_by_the_next_route_and_check(client, world, draft):
    client.force_login(world.carla)
    revision = ready(draft)
    assert route_of(revision) == [("Compliance reviewers", 1)]
    rule = ApprovalRule.objects.get(name=DEFAULT_RULE)
    step = rule.steps.get()
    response = client.post(
        reverse("admin:approvals_approvalrule_change", args=[rule.pk]),
        {
            "name": rule.name,
            "description": rule.description,
            "priority": rule.priority,
            "enabled": "on",
            "condition": "{}",
            "requires_review": "on",
            "steps-TOTAL_FORMS": "1",
            "steps-INITIAL_FORMS": "1",
            "steps-MIN_NUM_FORMS": "0",
            "steps-MAX_NUM_FORMS": "1000",
            "steps-0-id": step.pk,
            "steps-0-rule": rule.pk,
            "steps-0-stage": "1",
            "steps-0-group": step.group_id,
            "steps-0-quorum": "2",
            "steps-0-due_hours": "8",
            "steps-0-escalation_group": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert route_of(revision) == [("Compliance reviewers", 2)]

    long_post = Subject(text="a" * 50, networks=frozenset({"x"}))
    assert "network.too_long" not in codes(long_post)
    x = NetworkRule.objects.get(network="x")
    response = client.post(
        reverse("admin:approvals_networkrule_change", args=[x.pk]),
        {"network": "x", "max_length": "10", "weighted": "on", "refuse_shorteners": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert "network.too_long" in codes(long_post)

    response = client.post(
        reverse("admin:approvals_disclaimer_add"),
        {
            "name": "Ours",
            "text": "Mention ABC.",
            "language": "fr",
            "networks": "[]",
            "categories": "[]",
            "link_allowed_on": "[]",
            "severity": "block",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert missing(Disclaimer.objects.get(name="Ours"))


def test_the_next_submit_sees_a_change(world, draft, draft_factory):
    config.current()  # warm
    RuleStep.objects.filter(rule__name=DEFAULT_RULE).update(quorum=2)
    post = workflow.submit(draft.pk, world.alice)
    assert [step.quorum for step in post.steps.all()] == [2]

    other = draft_factory()
    raw("UPDATE approvals_networkrule SET max_length = 10 WHERE network = 'sandbox'")
    with pytest.raises(workflow.Blocked, match="over"):
        workflow.submit(other.pk, world.alice)


@pytest.fixture
def draft_factory(world):
    def make():
        return workflow.create_post(
            world.alice,
            text="Nos conseillers vous accueillent.",
            account_ids=[world.lyon_sandbox.pk],
        )

    return make


# --- Rollback, no row -----------------------------------------------------------------------------


class Rollback(Exception):
    pass


def x_limit():
    return config.current().network_rules["x"].max_length


def test_a_rolled_back_change_does_not_poison_the_cache(db):
    assert x_limit() == 280
    with pytest.raises(Rollback), transaction.atomic():
        NetworkRule.objects.filter(network="x").update(max_length=10)
        assert x_limit() == 10  # cached, under a version that is rolled back
        raise Rollback
    assert x_limit() == 280

    with pytest.raises(Rollback), transaction.atomic():
        NetworkRule.objects.filter(network="x").update(max_length=10)
        assert x_limit() == 10
        raise Rollback
    # Not read in between: a counter would give this change the rolled-back one's number.
    NetworkRule.objects.filter(network="x").update(max_length=20)
    assert x_limit() == 20


def test_without_the_version_row_every_call_reloads(db):
    ConfigVersion.objects.all().delete()
    assert config.read_version() is None
    first = config.current()
    second = config.current()
    assert second is not first and second.matcher is first.matcher  # the same lexicon
    NetworkRule.objects.filter(network="x").update(max_length=20)
    assert x_limit() == 20


def test_a_warm_cache_is_reused(db):
    first = config.current()
    assert config.current() is first
    with config.using():
        assert config.current() is first
        NetworkRule.objects.filter(network="x").update(max_length=20)
        assert config.current() is first  # pinned: changes are seen after the block
        with config.using():
            assert config.current() is first  # the outer block's
    assert x_limit() == 20
    with config.using(first):
        assert x_limit() == 280


def test_a_block_that_reads_nothing_makes_no_query(django_assert_num_queries):
    with django_assert_num_queries(0), config.using():
        pass


# --- Triggers on every table a build reads --------------------------------------------------------

TABLE_RE = re.compile(r'(?:FROM|JOIN)\s+"?(\w+)"?', re.IGNORECASE)


def installed_triggers():
    """{(table, operation)} of the configuration triggers in the database."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT tbl_name, name FROM sqlite_master"
                " WHERE type = 'trigger' AND name LIKE 'config_changed_%'"
            )
            return {(table, name.rsplit("_", 1)[1].upper()) for table, name in cursor.fetchall()}
        cursor.execute(
            "SELECT c.relname, t.tgtype FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE t.tgname = 'approvals_config_changed'"
        )
        operations = {4: "INSERT", 8: "DELETE", 16: "UPDATE", 32: "TRUNCATE"}
        return {
            (table, op)
            for table, tgtype in cursor.fetchall()
            for bit, op in operations.items()
            if tgtype & bit
        }


def test_every_table_a_build_reads_has_triggers(db):
    with CaptureQueriesContext(connection) as queries:
        config._build(None, None)
    read = {table for q in queries for table in TABLE_RE.findall(q["sql"])}
    assert read and read <= set(config.TABLES), read - set(config.TABLES)
    operations = {"INSERT", "UPDATE", "DELETE"} | (
        {"TRUNCATE"} if connection.vendor == "postgresql" else set()
    )
    assert installed_triggers() == {(t, op) for t in config.TABLES for op in operations}
