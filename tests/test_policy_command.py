"""`python manage.py policy_check FILE`: one JSON line of findings per input line, in order.

Run in-process through Django's command line (execute_from_command_line), so the exit status is
the one a shell would see. The output format is tested with a test double registered in
approvals.policy.CHECKS; one test runs the real checks.
"""

import io
import json
import re
import sys

import pytest
from django.core.management import execute_from_command_line

from approvals import policy
from approvals.policy import Check, Finding

pytestmark = pytest.mark.django_db


class EchoCheck(Check):
    """Test double: one finding per "guaranteed", saying which networks, team, link and tags it
    was asked about."""

    def run(self, subject, found):
        for match in re.finditer("guaranteed", subject.text):
            yield Finding(
                "echo.guarantee",
                "guarantee",
                "block",
                "No guarantees",
                "Say target",
                *match.span(),
                data={
                    "networks": sorted(subject.networks),
                    "team": subject.team,
                    "link": subject.link,
                    "tags": sorted(subject.tags),
                },
            )


@pytest.fixture(autouse=True)
def echo_check(request, monkeypatch):
    if "real_checks" not in request.node.name:
        monkeypatch.setattr(policy, "CHECKS", [f"{__name__}.EchoCheck"])


def run(capsys, *args, stdin=None, monkeypatch=None):
    """(exit status, JSON lines printed, stderr) of `manage.py policy_check *args`."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", stdin)
    try:
        execute_from_command_line(["manage.py", "policy_check", *args])
        status = 0
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def write(tmp_path, *lines, raw=None):
    path = tmp_path / "posts.jsonl"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("".join(line + "\n" for line in lines), "utf-8")
    return str(path)


def test_one_output_line_per_input_line_in_order_and_status_1_for_a_malformed_one(tmp_path, capsys):
    path = write(
        tmp_path,
        json.dumps({"text": "Returns guaranteed, twice guaranteed", "networks": ["x"]}),
        '{"text": "unfinished',
        json.dumps(
            {
                "text": "Rendement guaranteed",
                "networks": ["linkedin", "x"],
                "link": "https://example.com",
                "team": "Lyon",
            }
        ),
    )
    status, lines, err = run(capsys, path)
    assert status == 1
    assert "1 malformed line" in err
    assert [line["line"] for line in lines] == [1, 2, 3]
    first, second, third = lines
    assert [(f["start"], f["end"]) for f in first["findings"]] == [(8, 18), (26, 36)]
    assert first["findings"][0] == {
        "code": "echo.guarantee",
        "category": "guarantee",
        "severity": "block",
        "message": "No guarantees",
        "fix": "Say target",
        "start": 8,
        "end": 18,
        "network": "",
        "data": {"networks": ["x"], "team": "", "link": "", "tags": []},
    }
    assert set(second) == {"line", "error"} and second["error"].startswith("not JSON")
    assert third["findings"][0]["data"] == {
        "networks": ["linkedin", "x"],
        "team": "Lyon",
        "link": "https://example.com",
        "tags": [],
    }


def test_status_0_when_every_line_is_read_even_without_findings(tmp_path, capsys):
    path = write(
        tmp_path,
        json.dumps({"text": "Nos conseillers vous accueillent samedi.", "networks": []}),
        json.dumps({"text": "Plain", "networks": ["x"], "tags": ["Livret A"]}),
    )
    status, lines, err = run(capsys, path)
    assert status == 0 and err == ""
    assert lines == [{"line": 1, "findings": []}, {"line": 2, "findings": []}]


def test_blank_lines_are_skipped_and_numbers_stay_the_files(tmp_path, capsys):
    path = write(
        tmp_path,
        "",
        json.dumps({"text": "guaranteed"}),
        "   ",
        "\t",
        json.dumps({"text": "not that"}),
    )
    status, lines, _ = run(capsys, path)
    assert status == 0
    assert [(line["line"], len(line["findings"])) for line in lines] == [(2, 1), (5, 0)]


@pytest.mark.parametrize(
    "line, error",
    [
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
        ("{}", '"text" must be a string'),
        ('{"text": 3}', '"text" must be a string'),
        ('{"text": "a", "networks": "x"}', '"networks" must be a list of strings'),
        ('{"text": "a", "networks": [1]}', '"networks" must be a list of strings'),
        ('{"text": "a", "link": ["x"]}', '"link" must be a string'),
        ('{"text": "a", "network": ["x"]}', "unknown keys: network"),
        ("{'text': 'a'}", "not JSON"),
    ],
)
def test_malformed_lines_say_why_and_the_next_lines_still_run(tmp_path, capsys, line, error):
    path = write(tmp_path, line, json.dumps({"text": "guaranteed", "networks": ["x"]}))
    status, lines, _ = run(capsys, path)
    assert status == 1
    assert lines[0]["line"] == 1 and error in lines[0]["error"]
    assert lines[1]["line"] == 2 and len(lines[1]["findings"]) == 1


def test_a_line_that_is_not_utf8_is_malformed_alone(tmp_path, capsys):
    good = json.dumps({"text": "guaranteed é"}, ensure_ascii=False).encode()
    path = write(tmp_path, raw=b'{"text": "caf\xe9"}\n' + good + b"\n")
    status, lines, _ = run(capsys, path)
    assert status == 1
    assert lines[0]["error"].startswith("not UTF-8")
    assert lines[1] == {
        "line": 2,
        "findings": [
            {
                "code": "echo.guarantee",
                "category": "guarantee",
                "severity": "block",
                "message": "No guarantees",
                "fix": "Say target",
                "start": 0,
                "end": 10,
                "network": "",
                "data": {"networks": [], "team": "", "link": "", "tags": []},
            }
        ],
    }


def test_dash_reads_standard_input(capsys, monkeypatch):
    data = "\n".join(
        [json.dumps({"text": "guaranteed"}), "nope", json.dumps({"text": "é guaranteed"})]
    )
    stdin = io.TextIOWrapper(io.BytesIO(data.encode("utf-8")), encoding="utf-8")
    status, lines, _ = run(capsys, "-", stdin=stdin, monkeypatch=monkeypatch)
    assert status == 1
    assert [line["line"] for line in lines] == [1, 2, 3]
    assert "error" in lines[1]
    assert lines[2]["findings"][0]["start"] == 2  # spans count characters, not bytes
    # a text stream without a binary buffer works too
    stdin = io.StringIO(json.dumps({"text": "guaranteed"}) + "\n")
    status, lines, _ = run(capsys, "-", stdin=stdin, monkeypatch=monkeypatch)
    assert status == 0 and lines == [{"line": 1, "findings": lines[0]["findings"]}]
    assert len(lines[0]["findings"]) == 1


def test_output_is_utf8_json_not_ascii_escapes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        EchoCheck,
        "run",
        lambda self, subject, found: [Finding("e", "guarantee", "warn", "Rendement « garanti »")],
    )
    path = write(tmp_path, json.dumps({"text": "x"}))
    execute_from_command_line(["manage.py", "policy_check", path])
    out = capsys.readouterr().out
    assert "« garanti »" in out


def test_a_file_that_cannot_be_opened_is_status_2(tmp_path, capsys):
    status, lines, err = run(capsys, str(tmp_path / "missing.jsonl"))
    assert status == 2 and lines == []
    assert "cannot read" in err


def test_real_checks_report_network_length(tmp_path, capsys):
    if not any("network" in path for path in policy.CHECKS):
        pytest.skip("approvals.policy.CHECKS registers no network check yet")
    path = write(
        tmp_path,
        json.dumps({"text": "a" * 600, "networks": ["mastodon"]}),
        json.dumps({"text": "Bonjour", "networks": ["mastodon"]}),
    )
    status, lines, _ = run(capsys, path)
    assert status == 0
    long, short = lines
    assert any(f["network"] == "mastodon" for f in long["findings"]), long
    assert not any(
        f["network"] == "mastodon" and f["category"] == "network" for f in short["findings"]
    )
