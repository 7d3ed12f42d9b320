"""`manage.py simulate_route`: the route a post would get, as JSON, for bulk checks of the rules."""

import json
from io import StringIO

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from approvals.models import ApprovalRule, RuleStep

pytestmark = pytest.mark.django_db


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "post.txt"
    path.write_text("Nos conseillers vous accueillent samedi à Lyon.\n", encoding="utf-8")
    return path


def simulate(*args):
    out, err = StringIO(), StringIO()
    call_command("simulate_route", *args, stdout=out, stderr=err)
    return json.loads(out.getvalue())


def test_prints_the_route_with_author_team_and_accounts(world, text_file):
    route = simulate(
        "--author", "alice", "--account", str(world.lyon_sandbox.pk), "--text-file", text_file
    )

    assert route["author"] == "alice" and route["team"] == "Lyon"
    assert route["accounts"] == [
        {"id": world.lyon_sandbox.pk, "name": "Lyon branch", "network": "sandbox", "team": "Lyon"}
    ]
    assert route["review_required"] is True and route["exempted_by"] is None
    assert route["matched_rules"] == [{"rule": "Default review", "version": 1}]
    [step] = route["steps"]
    assert step["group"] == "Compliance reviewers" and step["quorum"] == 1 and step["stage"] == 1
    assert step["due_hours"] == 8 and step["business_hours"] is True
    assert [r["rule"] for r in step["rules"]] == ["Default review"]


def test_overlapping_rules_and_tags_and_link(world, text_file):
    legal = Group.objects.create(name="Legal")
    rule = ApprovalRule.objects.create(
        name="Savings with a link",
        priority=10,
        condition={"all": [{"has_link": True}, {"length_over": 20}]},
    )
    RuleStep.objects.create(rule=rule, group=legal, stage=2, quorum=2)
    RuleStep.objects.create(rule=rule, group=world.reviewers, stage=1, quorum=2, due_hours=2)
    args = ["--author", "alice", "--account", str(world.lyon_sandbox.pk)]
    args += ["--account", str(world.paris_sandbox.pk), "--text-file", text_file]

    without_link = simulate(*args)
    with_link = simulate(*args, "--link", "https://example.com/livret")

    assert [s["group"] for s in without_link["steps"]] == ["Compliance reviewers"]
    assert len(with_link["accounts"]) == 2
    first, second = with_link["steps"]
    # Same group, same stage: the stricter quorum and the earliest due time win.
    assert (first["group"], first["stage"], first["quorum"]) == ("Compliance reviewers", 1, 2)
    assert (first["due_hours"], first["business_hours"]) == (2, False)
    assert {r["rule"] for r in first["rules"]} == {"Savings with a link", "Default review"}
    assert (second["group"], second["stage"], second["quorum"]) == ("Legal", 2, 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--author", "nobody", "--account", "{account}"], 'Unknown author "nobody"'),
        (["--author", "rita", "--account", "{account}"], '"rita" is in no team'),
        (["--author", "alice", "--account", "999999"], "Unknown account id: 999999"),
        (["--author", "alice", "--account", "{account}", "--tag", "Nope"], "Unknown tag: Nope"),
    ],
)
def test_bad_input_is_a_clear_error(world, text_file, args, message):
    args = [a.format(account=world.lyon_sandbox.pk) for a in args]
    with pytest.raises(CommandError, match=message):
        simulate(*args, "--text-file", text_file)


def test_unreadable_text_file_is_a_clear_error(world, tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(CommandError, match="Cannot read the text file"):
        simulate(
            "--author", "alice", "--account", str(world.lyon_sandbox.pk), "--text-file", missing
        )


def test_no_route_prints_the_reason_to_stderr_and_exits_2(world, text_file):
    ApprovalRule.objects.filter(name="Default review").update(enabled=False)  # the catch-all
    out, err = StringIO(), StringIO()

    with pytest.raises(SystemExit) as exit_:
        call_command(
            "simulate_route",
            "--author",
            "alice",
            "--account",
            str(world.lyon_sandbox.pk),
            "--text-file",
            text_file,
            stdout=out,
            stderr=err,
        )

    assert exit_.value.code == 2
    assert out.getvalue() == ""
    assert "No approval rule applies" in json.loads(err.getvalue())["error"]
