"""Where the automated checks show: the editor's live preview, the post page, the refused submit,
the queue's counts by severity, routing on findings, and the highlighted text (escaped piece by
piece: approvals/highlight.py).

The UI plumbing is tested with a test double registered in approvals.policy.CHECKS (`fake_checks`);
the tests marked "real checks" use the checks of approvals/policy/ and the default lexicon, and
skip, saying which, while those are not there yet.
"""

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from guardian.shortcuts import assign_perm

from approvals import policy, workflow
from approvals.highlight import highlight, rows
from approvals.models import (
    ApprovalRule,
    Disclaimer,
    LedgerEntry,
    Post,
    ReviewStep,
    RevisionFinding,
    RuleStep,
)
from approvals.models.posts import State
from approvals.policy import Check, Finding
from tests.conftest import login, make_user
from tests.test_queue import bulk_in_review

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
XSS = [line for line in (DATA / "xss_payloads.txt").read_text("utf-8").splitlines() if line]

NASTY = 'No "guarantees" <b>here</b> & <script>alert(1)</script>'
MENTION = 'Capital at risk. "<b>" & <script>alert(1)</script>'


class FakeCheck(Check):
    """Test double: "guaranteed" blocks, "5 stars" is a testimonial warning, "tip" is info,
    "mention please" asks for a mention to insert; messages carry markup that must be escaped."""

    def run(self, subject, found):
        text = subject.text
        for match in re.finditer("guaranteed", text):
            yield Finding(
                "fake.guarantee", "guarantee", "block", NASTY, "Say <i>target</i>", *match.span()
            )
        for match in re.finditer("5 stars", text):
            yield Finding("fake.testimonial", "testimonial", "warn", "A review", "", *match.span())
        for match in re.finditer("tip", text):
            yield Finding("fake.tip", "superlative", "info", "Just so you know", "", *match.span())
        if "mention please" in text and MENTION not in text:
            yield Finding(
                "disclaimer.missing",
                "disclaimer",
                "warn",
                "Required mention missing.",
                "Add it.",
                network="sandbox",
                data={"insert": MENTION},
            )


class RecordingCheck(Check):
    """Test double that keeps the subjects it was asked about."""

    seen = []

    def run(self, subject, found):
        RecordingCheck.seen.append(subject)
        return []


@pytest.fixture
def fake_checks(monkeypatch):
    monkeypatch.setattr(policy, "CHECKS", [f"{__name__}.FakeCheck"])


def require_checks(*names):
    """Skip unless approvals.policy.CHECKS registers a check for each name."""
    missing = [name for name in names if not any(name in path for path in policy.CHECKS)]
    if missing:
        pytest.skip(
            f"approvals.policy.CHECKS registers no {', '.join(missing)} check yet "
            "(written by other helpers of issue 4)"
        )


# --- HTML inspection --------------------------------------------------------------------------

ALLOWED_TAGS = {
    "a", "article", "aside", "blockquote", "body", "br", "button", "caption", "code", "del",
    "div", "fieldset", "footer", "form", "h1", "h2", "h3", "head", "header", "html", "input",
    "ins", "label", "legend", "li", "link", "main", "mark", "meta", "nav", "ol", "option", "p",
    "script", "section", "select", "small", "span", "strong", "table", "tbody", "td",
    "textarea", "th", "thead", "time", "title", "tr", "ul",
}  # fmt: skip


class _Parsed(HTMLParser):
    """Tags, attributes and the text as a reader sees it (<br> as a line break)."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.problems = [], [], []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "br":
            self.text.append("\n")
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"unexpected <{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"{name}= on <{tag}>")
            compact = re.sub(r"[\s\x00-\x1f]", "", value or "")
            if name in {"href", "src", "action"} and re.match(
                r"(javascript|vbscript|data):", compact, re.I
            ):
                if (tag, name, value) != ("link", "href", "data:,"):
                    self.problems.append(f"{name}={value!r} on <{tag}>")
        if tag == "script" and not dict(attrs).get("src", "").startswith(settings.STATIC_URL):
            self.problems.append(f"inline or foreign <script {attrs}>")

    def handle_data(self, data):
        self.text.append(data)


def assert_safe(html):
    parsed = _Parsed(html)
    assert parsed.problems == []
    return parsed


def marks(html):
    """(class, title, text) of each <mark> in the HTML."""
    return [
        (cls, title, re.sub(r"<[^>]+>", "", inner))
        for cls, title, inner in re.findall(
            r'<mark class="([^"]*)" title="([^"]*)">(.*?)</mark>', html, re.S
        )
    ]


def page(response):
    return response.content.decode()


def preview(client, world, text, **extra):
    data = {"text": text, "accounts": [world.lyon_sandbox.pk], **extra}
    response = client.post(reverse("post_preview"), data)
    assert response.status_code == 200
    return page(response)


def state_of(post):
    post.refresh_from_db()
    return (
        post.state,
        post.current_revision_id,
        LedgerEntry.objects.filter(post_id=post.pk).count(),
        RevisionFinding.objects.count(),
        ReviewStep.objects.filter(post=post).count(),
    )


@pytest.fixture
def alice(client, world):
    return login(client, world.alice)


def new_post(world, text):
    return workflow.create_post(world.alice, text=text, account_ids=[world.lyon_sandbox.pk])


# --- approvals/highlight.py ---------------------------------------------------------------------


def finding(start, end, severity="warn", message="m", code="c"):
    return Finding(code, "guarantee", severity, message, "", start, end)


def urlized(text):
    return Template("{{ v|urlize|linebreaksbr }}").render(Context({"v": text}))


def test_highlight_without_spans_is_what_the_pages_showed_before():
    text = "Rates < 3% & no fees.\nSee https://example.com/?a=1&b=2 or mail me@example.com"
    assert highlight(text, []) == urlized(text)
    assert highlight(text, [Finding("x", "network", "info", "no span")]) == urlized(text)
    assert highlight("", [finding(0, 3)]) == ""


def test_highlight_marks_spans_with_the_most_severe_finding_and_all_messages():
    text = "Rendement garanti de 8 % !"
    html = highlight(
        text,
        [
            finding(10, 17, "warn", "Guarantee"),
            finding(0, 17, "block", "Promise"),
            finding(18, 24, "info", "Figure"),
        ],
    )
    assert marks(html) == [
        ("finding-block", "Promise", "Rendement "),
        ("finding-block", "Promise · Guarantee", "garanti"),
        ("finding-info", "Figure", "de 8 %"),
    ]
    assert _Parsed(html).text and "".join(_Parsed(html).text) == text


def test_highlight_clamps_or_ignores_bad_spans():
    text = "short text"
    html = highlight(text, [finding(6, 99), finding(-5, 2), finding(4, 4), finding(8, 3)])
    assert [m[2] for m in marks(html)] == ["sh", "text"]
    assert "".join(_Parsed(html).text) == text


def test_highlight_never_links_half_a_url():
    text = "Go to https://example.com/offer now, or https://bit.ly/x"
    cut = text.index("example")
    html = highlight(text, [finding(cut, cut + 7), finding(text.index("https://bit"), len(text))])
    hrefs = [attrs["href"] for tag, attrs in _Parsed(html).tags if tag == "a"]
    assert hrefs == ["https://bit.ly/x"]  # the marked whole URL only; never "http://example…"
    assert "".join(_Parsed(html).text) == text


def test_highlight_keeps_line_breaks_inside_and_outside_marks():
    text = "one\ntwo garanti\nthree"
    html = highlight(text, [finding(4, 15, message="multi\nline message")])
    mark = '<mark class="finding-warn" title="multi line message">two garanti</mark>'
    assert html == f"one<br>{mark}<br>three"


@pytest.mark.parametrize("payload", XSS)
def test_highlight_escapes_every_payload_whatever_the_cuts(payload):
    text = f"Rendement garanti {payload} fin"
    size = len(text)
    for spans in (
        [(0, size)],
        [(18, 18 + len(payload))],  # the payload exactly
        [(3, 20), (19, size - 5)],  # overlapping, cutting the payload's first characters
        [(i, i + 3) for i in range(0, size, 5)],  # cuts everywhere, inside tags and entities
    ):
        findings = [finding(s, e, message=payload) for s, e in spans]
        html = highlight(text, findings)
        parsed = assert_safe(html)
        assert {tag for tag, _ in parsed.tags} <= {"mark", "a", "br"}, html
        for tag, attrs in parsed.tags:
            if tag == "a":
                assert re.match(r"(https?|mailto):", attrs["href"]), html
            if tag == "mark":
                # the message, escaped, read back as typed (white space folded)
                assert attrs["title"] == " ".join(payload.split())
        assert "".join(parsed.text) == text, html


def test_rows_put_the_most_severe_first_with_labels_excerpts_and_mentions():
    text = "5 stars, guaranteed"
    found = [
        Finding("t", "testimonial", "warn", "Review", "", 0, 7),
        Finding("g", "guarantee", "block", "Promise", "Say target", 9, 19),
        Finding("d", "disclaimer", "warn", "Missing", "", data={"insert": "Mention"}),
    ]
    listed = rows(text, found)
    assert [r.code for r in listed] == ["g", "t", "d"]
    assert listed[0].excerpt == "guaranteed" and listed[0].category_label.startswith("Guarantee")
    assert listed[0].severity_label == "Blocks submission"
    assert listed[2].insert == "Mention" and listed[2].excerpt == ""


# --- editor: live preview -------------------------------------------------------------------------


def test_preview_lists_findings_and_highlights_their_spans(alice, world, fake_checks):
    html = preview(alice, world, "Returns guaranteed, 5 stars & a tip")
    assert_safe(html)
    escaped_nasty = (
        "No &quot;guarantees&quot; &lt;b&gt;here&lt;/b&gt; &amp; "
        "&lt;script&gt;alert(1)&lt;/script&gt;"
    )
    assert marks(html) == [
        ("finding-block", escaped_nasty, "guaranteed"),
        ("finding-warn", "A review", "5 stars"),
        ("finding-info", "Just so you know", "tip"),
    ]
    assert "Submission will be refused until:" in html
    assert html.count(escaped_nasty) == 3  # the mark's title, the refusal, the list
    assert "Say &lt;i&gt;target&lt;/i&gt;" in html
    assert '<span class="badge badge-block" title="Blocks submission">block</span>' in html
    assert '<span class="badge badge-warn"' in html and '<span class="badge badge-info"' in html
    assert "“guaranteed”" in html  # the excerpt the finding concerns
    # the per-network preview is still there, unmarked
    assert '<article class="preview network-sandbox">' in html
    assert "<script>" not in html


def test_preview_without_a_block_says_nothing_about_refusal(alice, world, fake_checks):
    html = preview(alice, world, "Our clients give us 5 stars")
    assert "Submission will be refused" not in html
    assert marks(html) == [("finding-warn", "A review", "5 stars")]
    html = preview(alice, world, "Nos conseillers vous accueillent samedi.")
    assert "The automated checks found nothing to fix." in html and "<mark" not in html


def test_preview_runs_no_check_without_text(alice, world, fake_checks):
    html = preview(alice, world, "   ")
    assert "Automated checks" not in html


def test_preview_checks_what_is_typed_for_the_chosen_accounts_team_link_and_tags(
    alice, world, monkeypatch
):
    from approvals.models import SocialAccount, Tag

    monkeypatch.setattr(policy, "CHECKS", [f"{__name__}.RecordingCheck"])
    RecordingCheck.seen = []
    hook = SocialAccount.objects.create(
        team=world.lyon, network="webhook", name="Lyon hook", handle="@hook", validated=True
    )
    tag = Tag.objects.create(name="Livret A")
    preview(
        alice,
        world,
        "Hello\r\nworld",
        accounts=[world.lyon_sandbox.pk, hook.pk],
        link="example.com/offer",
        tags=[tag.pk],
    )
    (subject,) = RecordingCheck.seen
    assert subject.text == "Hello\nworld"
    assert subject.networks == frozenset({"sandbox", "webhook"})
    assert subject.team == "Lyon"
    assert subject.link == "https://example.com/offer"
    assert subject.tags == frozenset({"Livret A"})


def test_insert_mention_button_is_there_for_a_missing_mention_with_its_text_escaped(
    alice, world, fake_checks
):
    html = preview(alice, world, "Our offer, mention please")
    parsed = assert_safe(html)
    (button,) = [attrs for tag, attrs in parsed.tags if tag == "button"]
    assert button["data-insert"] == MENTION  # read back as typed: it was escaped in the page
    assert button["type"] == "button" and button["data-insert-into"] == "id_text"
    assert 'data-insert="Capital at risk. &quot;&lt;b&gt;&quot; &amp; &lt;script&gt;' in html
    assert "Insert this mention" in html
    # a finding without a mention to insert has no button; nor has the post page (no editor)
    assert "Insert this mention" not in preview(alice, world, "5 stars")


def test_editor_page_loads_the_script_that_inserts_mentions(alice, world):
    html = page(alice.get(reverse("post_create")))
    assert f'<script src="{settings.STATIC_URL}reviewflow.js" defer></script>' in html
    js = (Path(settings.BASE_DIR) / "static" / "reviewflow.js").read_text()
    assert "data-insert" in js and 'addEventListener("click"' in js


# --- post page, submit --------------------------------------------------------------------------


def test_draft_page_shows_live_findings_not_yet_frozen_and_why_submit_will_be_refused(
    alice, world, fake_checks
):
    post = new_post(world, "Returns guaranteed, 5 stars")
    html = page(alice.get(reverse("post_detail", args=[post.pk])))
    assert_safe(html)
    assert "Automated checks" in html and "not yet frozen" in html
    assert [m[2] for m in marks(html)] == ["guaranteed", "5 stars"]
    assert 'id="submit-blocked"' in html and "Submission will be refused" in html
    assert "Submit for review" in html  # the button stays: the server says why it refuses
    assert "Insert this mention" not in html


def test_submit_with_a_block_finding_is_refused_400_and_changes_nothing(alice, world, fake_checks):
    post = new_post(world, "Returns guaranteed, 5 stars")
    before = state_of(post)
    response = alice.post(reverse("post_submit", args=[post.pk]), {"comment": "please"})
    assert response.status_code == 400
    html = page(response)
    assert_safe(html)
    assert "Fix this before submitting:" in html
    assert "No &quot;guarantees&quot; &lt;b&gt;here&lt;/b&gt;" in html
    assert "Nothing was changed." in html
    assert state_of(post) == before
    assert post.state == State.DRAFT and not RevisionFinding.objects.exists()


def test_warn_findings_let_submit_through_frozen_and_highlighted_for_reviewers(
    client, world, fake_checks, monkeypatch
):
    text = "Clients give us 5 stars\nAsk for a tip"
    post = new_post(world, text)
    login(client, world.alice)
    response = client.post(reverse("post_submit", args=[post.pk]))
    assert response.status_code == 302
    post.refresh_from_db()
    assert post.state == State.IN_REVIEW
    frozen = list(
        post.current_revision.findings.values_list("code", "severity", "start", "end", "message")
    )
    assert frozen == [
        ("fake.testimonial", "warn", text.index("5 stars"), text.index("\nAsk"), "A review"),
        ("fake.tip", "info", text.index("tip"), len(text), "Just so you know"),
    ]
    login(client, world.rita)
    html = page(client.get(reverse("post_detail", args=[post.pk])))
    assert_safe(html)
    assert "not yet frozen" not in html and "Found when revision 1 was submitted" in html
    assert marks(html) == [
        ("finding-warn", "A review", "5 stars"),
        ("finding-info", "Just so you know", "tip"),
    ]
    highlighted = re.search(r'<div [^>]*id="highlighted-text"[^>]*>(.*?)</div>', html, re.S)
    assert highlighted.group(1).startswith("Clients give us <mark")
    assert '<div class="post-text" id="post-text">Clients give us 5 stars<br>' in html
    assert "<br>Ask for a " in html
    # frozen: changing the checks now changes nothing the reviewer sees
    RecordingCheck.seen = []
    monkeypatch.setattr(policy, "CHECKS", [f"{__name__}.RecordingCheck"])
    html = page(client.get(reverse("post_detail", args=[post.pk])))
    assert RecordingCheck.seen == [] and len(marks(html)) == 2


def test_page_of_a_revision_without_findings_says_so(alice, world, fake_checks):
    post = new_post(world, "Nos conseillers vous accueillent samedi.")
    html = page(alice.get(reverse("post_detail", args=[post.pk])))
    assert "The automated checks found nothing to fix." in html and "<mark" not in html
    workflow.submit(post.pk, world.alice)
    html = page(alice.get(reverse("post_detail", args=[post.pk])))
    assert "No findings were recorded for this revision." in html


# --- queue and routing --------------------------------------------------------------------------


def test_queue_counts_findings_by_severity_per_row(client, world, fake_checks):
    clean = workflow.submit(new_post(world, "Nothing to see").pk, world.alice)
    flagged = workflow.submit(new_post(world, "5 stars, 5 stars and a tip").pk, world.alice)
    RevisionFinding.objects.create(  # as if an admin's check had frozen a block (not possible now)
        revision=flagged.current_revision, code="x", category="guarantee", severity="block",
        message="m",
    )  # fmt: skip
    login(client, world.rita)
    html = page(client.get(reverse("review_queue")))
    assert_safe(html)
    row = (
        r'<tr id="step-\d+">.*?href="/posts/(\d+)/".*?<td class="checks-count[^"]*"[^>]*>(.*?)</td>'
    )
    cells = dict(re.findall(row, html, re.S))
    assert cells[str(flagged.pk)] == "1 block · 2 warn · 1 info"
    assert cells[str(clean.pk)] == '<span class="meta">none</span>'
    assert '<th scope="col">Checks</th>' in html


def test_queue_counts_keep_the_query_count_constant(client, world):
    def add_findings(steps):
        RevisionFinding.objects.bulk_create(
            RevisionFinding(
                revision_id=step.revision_id, code="w", category="testimonial", severity=sev,
                message="m",
            )
            for step in steps
            for sev in ("warn", "warn", "info")
        )  # fmt: skip

    add_findings(bulk_in_review(10, team=world.lyon, author=world.alice, group=world.reviewers))
    login(client, world.rita)
    url = reverse("review_queue")
    client.get(url)
    with CaptureQueriesContext(connection) as small:
        html = page(client.get(url))
    assert html.count("2 warn · 1 info") == 10
    add_findings(bulk_in_review(300, team=world.lyon, author=world.alice, group=world.reviewers))
    with CaptureQueriesContext(connection) as large:
        html = page(client.get(url))
    assert html.count("2 warn · 1 info") == 50
    assert len(small) == len(large) == 6, [q["sql"] for q in large]


@pytest.fixture
def marketing(world, django_user_model):
    """A Marketing group (mia) that a rule on testimonial findings adds to the route."""
    group = Group.objects.create(name="Marketing")
    mia = make_user(django_user_model, "mia")
    assign_perm("approvals.review_team", mia, world.lyon)
    group.user_set.add(mia)
    rule = ApprovalRule.objects.create(
        name="Testimonials", condition={"finding": {"category": "testimonial"}}
    )
    RuleStep.objects.create(rule=rule, group=group)
    return group


def route_groups(post):
    return sorted(
        ReviewStep.objects.filter(revision=post.current_revision).values_list(
            "group__name", flat=True
        )
    )


def test_a_rule_on_testimonial_findings_routes_to_an_extra_group(
    client, world, fake_checks, marketing
):
    plain = workflow.submit(new_post(world, "Nos conseillers vous accueillent.").pk, world.alice)
    praised = workflow.submit(new_post(world, "Our clients give us 5 stars").pk, world.alice)
    assert route_groups(plain) == ["Compliance reviewers"]
    assert route_groups(praised) == ["Compliance reviewers", "Marketing"]
    login(client, world.alice)
    html = page(client.get(reverse("post_detail", args=[praised.pk])))
    assert "Marketing" in html


# --- with the real checks -----------------------------------------------------------------------


def test_real_guarantee_is_blocked_in_preview_highlighted_and_refused_at_submit(alice, world):
    require_checks("lexicon")
    text = "Rendement garanti de 8 % !"
    html = preview(alice, world, text)
    assert_safe(html)
    blocked = [m for m in marks(html) if m[0] == "finding-block"]
    assert blocked, html
    assert any("garanti" in m[2].lower() for m in blocked), blocked
    assert "Submission will be refused until:" in html

    post = new_post(world, text)
    before = state_of(post)
    response = alice.post(reverse("post_submit", args=[post.pk]))
    assert response.status_code == 400
    assert "Fix this before submitting:" in page(response)
    assert state_of(post) == before and not RevisionFinding.objects.exists()


def test_real_warning_lets_submit_through_frozen_with_its_span(client, world):
    require_checks("lexicon")  # its default entries flag reviews; the testimonial check too
    text = "Nos clients nous donnent 5 étoiles sur Google."
    findings = policy.check(policy.subject_for(text=text, accounts=[world.lyon_sandbox]))
    assert findings and not policy.blocking(findings), findings
    assert "testimonial" in {f.category for f in findings}
    post = workflow.submit(new_post(world, text).pk, world.alice)
    assert post.state == State.IN_REVIEW
    frozen = list(post.current_revision.findings.all())
    assert {(f.code, f.start, f.end) for f in frozen} == {
        (f.code, f.start, f.end) for f in findings
    }
    spanned = [f for f in frozen if f.start is not None]
    assert spanned and all(0 <= f.start < f.end <= len(text) for f in spanned)
    login(client, world.rita)
    html = page(client.get(reverse("post_detail", args=[post.pk])))
    assert_safe(html)
    assert {text[f.start : f.end] for f in spanned} <= {m[2] for m in marks(html)}


def test_real_testimonial_routes_to_the_extra_group_and_shows_in_the_queue(
    client, world, marketing
):
    require_checks("lexicon")  # its default entries flag reviews; the testimonial check too
    post = new_post(world, "Nos clients nous donnent 5 étoiles sur Google.")
    post = workflow.submit(post.pk, world.alice)
    assert route_groups(post) == ["Compliance reviewers", "Marketing"]
    login(client, world.rita)
    html = page(client.get(reverse("review_queue")))
    assert re.search(r"\d+ (warn|info)", html), html


def test_real_missing_mention_offers_the_insert_button(alice, world):
    require_checks("disclaimer")
    mention = "Communication à caractère publicitaire, document non contractuel."
    Disclaimer.objects.create(
        name="Mention test", text=mention, language="fr", networks=["sandbox"], severity="warn"
    )
    html = preview(alice, world, "Nous vous accueillons samedi pour parler de votre épargne.")
    parsed = assert_safe(html)
    buttons = [attrs for tag, attrs in parsed.tags if tag == "button"]
    assert [b["data-insert"].strip() for b in buttons] == [mention]
    html = preview(alice, world, f"Nous vous accueillons samedi.\n\n{mention}")
    assert "Insert this mention" not in html


def test_real_checks_keep_posts_ordinary_text_submittable(world):
    require_checks("lexicon")
    post = workflow.submit(
        new_post(world, "Nos conseillers vous accueillent samedi à Lyon.").pk, world.alice
    )
    assert post.state == State.IN_REVIEW
    revision = Post.objects.get(pk=post.pk).current_revision
    assert not revision.findings.filter(severity="block").exists()
