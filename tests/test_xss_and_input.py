"""Invariant 6 (plain text in, escaped out) and invariant 7 (bad input: a clear message, no change).

Every payload goes into every text field a person can type into. Payloads: tests/data/
xss_payloads.txt (classic XSS, one per line) and tests/data/blns_selection.json (a selection from
the Big List of Naughty Strings, MIT, see tests/data/blns.LICENSE).
"""

import json
import re
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.conf import settings
from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone

from approvals import workflow
from approvals.models import Decision, LedgerEntry, Post, Revision, SandboxPost
from approvals.models.posts import State
from approvals.sanitize import clean_html
from approvals.text import clean_text
from tests.conftest import login

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
XSS = [line for line in (DATA / "xss_payloads.txt").read_text("utf-8").splitlines() if line]
BLNS = json.loads((DATA / "blns_selection.json").read_text("utf-8"))
PAYLOADS = XSS + BLNS

# Every tag the templates and Django's widgets produce; anything else came from a payload.
PAGE_TAGS = {
    "a", "article", "aside", "blockquote", "body", "br", "button", "caption", "code", "del", "div",
    "fieldset", "footer", "form", "h1", "h2", "h3", "head", "header", "html", "input", "ins",
    "label", "legend", "li", "link", "main", "mark", "meta", "nav", "ol", "option", "p", "script",
    "section", "select", "small", "span", "strong", "table", "tbody", "td", "textarea", "th",
    "thead", "time", "title", "tr", "ul",
}  # fmt: skip
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "poster", "background"}
SCRIPT_SCHEME = re.compile(r"^(javascript|vbscript|data):", re.IGNORECASE)


class _Markup(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag not in PAGE_TAGS:
            self.problems.append(f"unexpected <{tag}>")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"event handler {name}= on <{tag}>")
            if name == "style":
                self.problems.append(f"style= on <{tag}>")
            compact = re.sub(r"[\s\x00-\x1f]", "", value or "")
            if (tag, name, value) == ("link", "href", "data:,"):
                continue  # base.html's empty favicon
            if name in URL_ATTRIBUTES and SCRIPT_SCHEME.match(compact):
                self.problems.append(f"{name}={value!r} on <{tag}>")
        if tag == "script" and not dict(attrs).get("src", "").startswith(settings.STATIC_URL):
            self.problems.append(f"inline or foreign <script {attrs}>")


def assert_safe_markup(html):
    """No tag, event handler, style or script URL that the templates did not write."""
    parser = _Markup()
    parser.feed(html)
    parser.close()
    assert parser.problems == []


def rendered(value, filters=""):
    """How the templates show `value` (autoescaped, through the same filters)."""
    return Template("{{ v" + filters + " }}").render(Context({"v": value}))


def assert_shown_escaped(html, value, filters=""):
    """`value` is on the page as text: escaped, never as markup."""
    assert_safe_markup(html)
    for line in value.split("\n"):
        if "<" in line:
            assert line not in html, f"unescaped {line!r}"
    if "<" in value:
        assert "&lt;" in html
    assert rendered(value, filters) in html


def page(response):
    return response.content.decode()


def field_error(html, name):
    """The message printed next to one form field (templates/approvals/partials/field.html)."""
    match = re.search(rf'<p class="error" id="id_{name}_error">(.*?)</p>', html, re.S)
    return match.group(1) if match else ""


def counts():
    return (
        Post.objects.count(),
        Revision.objects.count(),
        LedgerEntry.objects.count(),
        Decision.objects.count(),
    )


def stored(value):
    """What the database must hold for typed `value`: NFC, controls removed, nothing escaped."""
    return clean_text(value).strip()


@pytest.fixture
def alice(client, world):
    return login(client, world.alice)


@pytest.fixture
def other_client():
    from django.test import Client

    return Client()


def new_post(world, text="Draft for a payload"):
    return workflow.create_post(world.alice, text=text, account_ids=[world.lyon_sandbox.pk])


def approve(post, reviewer):
    post.refresh_from_db()
    return workflow.decide(
        post.pk, reviewer, outcome="approve", revision_hash=post.current_revision.content_hash
    )


def test_payload_files_load():
    assert 30 <= len(XSS) <= 60
    assert 60 <= len(BLNS) <= 100
    assert any("<script>" in p for p in BLNS) and any("\u202e" in p for p in BLNS)
    assert any("\u200d" in p for p in BLNS) and any("DROP TABLE" in p for p in BLNS)
    assert (DATA / "blns.LICENSE").read_text().startswith("The MIT License")


# --- invariant 6: every text field, every payload -------------------------------------------


def test_post_text_is_stored_as_typed_and_escaped_everywhere(world, alice):
    account = world.lyon_sandbox.pk
    for payload in PAYLOADS:
        before = counts()
        response = alice.post(reverse("post_create"), {"text": payload, "accounts": [account]})
        expected = stored(payload)
        if not expected:  # nothing left once control characters are removed
            assert response.status_code == 400, repr(payload)
            assert field_error(page(response), "text"), repr(payload)
            assert counts() == before
            continue
        assert response.status_code == 302, (repr(payload), page(response))
        post = Post.objects.latest("pk")
        assert post.current_revision.text == expected, repr(payload)
        assert LedgerEntry.objects.filter(post_id=post.pk).get().payload["text"] == expected

        detail = alice.get(reverse("post_detail", args=[post.pk]))
        assert_shown_escaped(page(detail), expected, "|urlize|linebreaksbr")
        edit = alice.get(reverse("post_edit", args=[post.pk]))
        assert_shown_escaped(page(edit), expected)  # the textarea holds the text, escaped
        preview = alice.post(reverse("post_preview"), {"text": payload, "accounts": [account]})
        assert_shown_escaped(page(preview), clean_text(payload), "|urlize|linebreaksbr")
    assert_safe_markup(page(alice.get(reverse("home"))))


def test_published_payloads_are_escaped_in_queue_and_sandbox_feed(
    world, client, django_capture_on_commit_callbacks
):
    texts = [stored(p) for p in XSS]
    for text in texts:
        post = new_post(world, text)
        workflow.submit(post.pk, world.alice)
    login(client, world.rita)
    assert_safe_markup(page(client.get(reverse("review_queue"))))
    for post in Post.objects.all():
        with django_capture_on_commit_callbacks(execute=True):
            approve(post, world.rita)
    assert Post.objects.filter(state=State.PUBLISHED).count() == len(texts)
    assert sorted(SandboxPost.objects.values_list("text", flat=True)) == sorted(texts)
    html = page(client.get(reverse("sandbox_feed", args=[world.lyon_sandbox.pk])))
    for text in texts:
        assert_shown_escaped(html, text, "|urlize|linebreaksbr")


def test_link_refuses_non_urls_cleanly_and_escapes_accepted_ones(world, alice):
    refused = 0
    for payload in PAYLOADS:
        before = counts()
        response = alice.post(
            reverse("post_create"),
            {"text": "Our new brochure", "link": payload, "accounts": [world.lyon_sandbox.pk]},
        )
        html = page(response)
        assert_safe_markup(html)  # the form shows the refused value back, escaped
        compact = re.sub(r"[\s\x00-\x1f]", "", payload)
        if SCRIPT_SCHEME.match(compact) or "<" in payload.split("?")[0]:
            assert response.status_code == 400, repr(payload)
        if response.status_code == 400:
            refused += 1
            assert "Enter a valid URL." in field_error(html, "link"), repr(payload)
            assert counts() == before
            continue
        assert response.status_code == 302, repr(payload)
        link = Post.objects.latest("pk").current_revision.link
        assert re.match(r"^https?://[^\s]+$", link), (payload, link)
        detail = page(alice.get(reverse("post_detail", args=[Post.objects.latest("pk").pk])))
        assert_shown_escaped(detail, link, "|urlize")
        preview = alice.post(
            reverse("post_preview"),
            {"text": "x", "link": payload, "accounts": [world.lyon_sandbox.pk]},
        )
        assert_safe_markup(page(preview))
    assert refused > len(PAYLOADS) * 0.8


def test_submit_comment_is_stored_as_typed_and_escaped_in_timeline(world, alice):
    for payload in PAYLOADS:
        post = new_post(world)
        response = alice.post(reverse("post_submit", args=[post.pk]), {"comment": payload})
        assert response.status_code == 302, repr(payload)
        entry = LedgerEntry.objects.get(post_id=post.pk, event="post.submitted")
        assert entry.payload["comment"] == stored(payload)
        html = page(alice.get(reverse("post_detail", args=[post.pk])))
        if stored(payload):
            assert_shown_escaped(html, stored(payload), "|linebreaksbr")
        else:
            assert_safe_markup(html)


def test_withdraw_reason_is_stored_as_typed_and_escaped_in_timeline(world, alice):
    for payload in PAYLOADS:
        post = new_post(world)
        response = alice.post(reverse("post_withdraw", args=[post.pk]), {"reason": payload})
        assert response.status_code == 302, repr(payload)
        entry = LedgerEntry.objects.get(post_id=post.pk, event="post.withdrawn")
        assert entry.payload["reason"] == stored(payload)
        html = page(alice.get(reverse("post_detail", args=[post.pk])))
        if stored(payload):
            assert_shown_escaped(html, stored(payload), "|linebreaksbr")


def test_decision_reason_is_stored_as_typed_and_escaped_in_timeline(world, client, other_client):
    rita = login(client, world.rita)
    alice = login(other_client, world.alice)
    post = None
    for payload in PAYLOADS:
        if post is None:
            post = workflow.submit(new_post(world).pk, world.alice)
        before = counts()
        response = rita.post(
            reverse("post_decide", args=[post.pk]),
            {
                "outcome": "request_changes",
                "reason": payload,
                "revision_hash": post.current_revision.content_hash,
            },
        )
        if not stored(payload):  # a reason of control characters only is no reason
            assert response.status_code == 400, repr(payload)
            assert "Say why" in field_error(page(response), "reason")
            assert counts() == before
            continue
        assert response.status_code == 302, (repr(payload), page(response))
        decision = Decision.objects.get(post=post)
        assert decision.reason == stored(payload)
        entry = LedgerEntry.objects.get(post_id=post.pk, event="post.changes_requested")
        assert entry.payload["reason"] == stored(payload)
        html = page(alice.get(reverse("post_detail", args=[post.pk])))
        assert_shown_escaped(html, stored(payload), "|linebreaksbr")
        post = None


def test_account_name_and_handle_are_escaped_wherever_shown(
    world, alice, django_capture_on_commit_callbacks
):
    account = world.lyon_sandbox
    post = workflow.submit(new_post(world, "Published for the account test").pk, world.alice)
    with django_capture_on_commit_callbacks(execute=True):
        approve(post, world.rita)
    for payload in PAYLOADS:
        # Only admins set these, and nothing is cleaned on the way in: the pages must cope.
        account.name = payload[:120] or "-"
        account.handle = payload[:120]
        account.save()
        pages = [
            alice.get(reverse("post_detail", args=[post.pk])),
            alice.get(reverse("post_create")),
            alice.post(reverse("post_preview"), {"text": "Hello", "accounts": [account.pk]}),
            alice.get(reverse("sandbox_feed", args=[account.pk])),
            alice.get(reverse("sandbox_index")),
        ]
        for response in pages:
            assert response.status_code == 200
            html = page(response)
            assert_safe_markup(html)
            for value in {account.name, account.handle} - {""}:
                if "<" in value:
                    assert value not in html, repr(value)
                    assert "&lt;" in html
            assert rendered(account.name) in html


# --- the sanitizer, for HTML from outside --------------------------------------------------


@pytest.mark.parametrize("tag", ["script", "style", "iframe", "svg", "math", "noscript"])
def test_clean_html_drops_dangerous_elements(tag):
    out = clean_html(f"<p>before</p><{tag}>alert(1)</{tag}><p>after</p>")
    assert f"<{tag}" not in out.lower()
    assert "<p>before</p>" in out and "<p>after</p>" in out


def test_clean_html_drops_event_handlers_styles_and_script_urls():
    out = clean_html(
        '<b onclick="alert(1)" style="color:red">bold</b>'
        '<a href="javascript:alert(1)" onmouseover="alert(2)">bad</a>'
        '<a href=" JaVaScRiPt:alert(3)">bad too</a>'
        '<img src=x onerror="alert(4)">'
    )
    assert "onclick" not in out and "onmouseover" not in out and "onerror" not in out
    assert "style" not in out and "<img" not in out
    assert "javascript" not in out.lower()
    assert "<b>bold</b>" in out


def test_clean_html_keeps_safe_links_and_basic_markup():
    out = clean_html('<p>Read <a href="https://example.com/a?b=1&amp;c=2">this</a> <b>now</b></p>')
    assert out.startswith("<p>") and "<b>now</b>" in out
    link = re.search(r"<a [^>]*>this</a>", out).group(0)
    assert 'href="https://example.com/a?b=1&amp;c=2"' in link
    assert "noopener" in link


def test_clean_text_keeps_what_was_typed():
    assert clean_text("rates < 3% & no fees") == "rates < 3% & no fees"
    assert clean_text("<b>bold</b> &amp;") == "<b>bold</b> &amp;"  # not HTML: left alone


def test_clean_text_removes_controls_and_bidi_overrides():
    assert clean_text("a\u0000b") == "ab"
    assert clean_text("pay \u202eusd 001") == "pay usd 001"
    assert clean_text("line\r\nnext\rlast\tend") == "line\nnext\nlast\tend"


def test_clean_text_normalizes_to_nfc():
    assert clean_text("e\u0301") == "\u00e9"


def test_clean_text_keeps_emoji_sequences():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"
    flag = "\U0001f3f3\ufe0f\u200d\U0001f308"
    assert clean_text(f"{family} {flag} \U0001f44d\U0001f3fd") == (
        f"{family} {flag} \U0001f44d\U0001f3fd"
    )


# --- invariant 7: bad input gets a clear message and changes nothing --------------------------


def test_oversize_text_is_refused_next_to_the_field(world, alice, draft):
    limit = settings.REVIEWFLOW["MAX_POST_LENGTH"]
    data = {"text": "x" * (limit + 1), "accounts": [world.lyon_sandbox.pk]}
    for url in (reverse("post_create"), reverse("post_edit", args=[draft.pk])):
        before = counts()
        response = alice.post(url, data)
        assert response.status_code == 400
        assert f"at most {limit}" in field_error(page(response), "text").replace(",", "")
        assert counts() == before
    with pytest.raises(workflow.ContentError, match=f"the maximum is {limit}"):
        workflow.create_post(
            world.alice, text="x" * (limit + 1), account_ids=[world.lyon_sandbox.pk]
        )


@pytest.mark.parametrize("which", ["unknown", "other_team", "unvalidated"])
def test_account_alice_may_not_use_is_refused(world, alice, draft, which):
    account_id = {
        "unknown": 999999,
        "other_team": world.paris_sandbox.pk,
        "unvalidated": world.lyon_unvalidated.pk,
    }[which]
    for url in (reverse("post_create"), reverse("post_edit", args=[draft.pk])):
        before = counts()
        response = alice.post(url, {"text": "Hello", "accounts": [account_id]})
        assert response.status_code == 400
        assert "not one you may publish to" in field_error(page(response), "accounts")
        assert counts() == before
    # the workflow refuses it too, whatever form a future view uses
    with pytest.raises(workflow.ContentError, match="not one you may publish to"):
        workflow.create_post(world.alice, text="Hello", account_ids=[account_id])
    assert counts() == before


def _every_post_url(client, pk, revision_hash=""):
    yield client.get(f"/posts/{pk}/")
    yield client.get(f"/posts/{pk}/edit/")
    yield client.post(f"/posts/{pk}/submit/", {"comment": "forged"})
    yield client.post(
        f"/posts/{pk}/decide/",
        {"outcome": "approve", "revision_hash": revision_hash},
    )
    yield client.post(f"/posts/{pk}/withdraw/", {"reason": "forged"})
    yield client.post(f"/posts/{pk}/retry/")


@pytest.mark.parametrize("who", ["alice", "tom", "bruno"])
def test_forged_or_foreign_post_ids_are_404(world, client, in_review, who):
    login(client, getattr(world, who))
    targets = ["999999", "abc"] + ([str(in_review.pk)] if who != "alice" else [])
    for pk in targets:
        before = counts()
        for response in _every_post_url(client, pk, in_review.current_revision.content_hash):
            assert response.status_code == 404, (who, pk, response.request["PATH_INFO"])
            assert "not found" in page(response).lower()
            # a 404 tells nothing about the post
            assert in_review.current_revision.text not in page(response)
        assert counts() == before
    in_review.refresh_from_db()
    assert in_review.state == State.IN_REVIEW


def test_decision_on_a_revision_that_changed_is_409(world, client, in_review):
    old_hash = in_review.current_revision.content_hash
    workflow.decide(
        in_review.pk,
        world.rita,
        outcome="request_changes",
        reason="Add the risk warning.",
        revision_hash=old_hash,
    )
    workflow.edit_post(
        in_review.pk, world.alice, text="Capital at risk.", account_ids=[world.lyon_sandbox.pk]
    )
    workflow.submit(in_review.pk, world.alice)
    login(client, world.sam)
    before = counts()
    response = client.post(
        reverse("post_decide", args=[in_review.pk]),
        {"outcome": "approve", "revision_hash": old_hash},
    )
    assert response.status_code == 409
    assert "changed since you opened it" in page(response)
    assert counts() == before
    in_review.refresh_from_db()
    assert in_review.state == State.IN_REVIEW and in_review.approved_revision is None


@pytest.mark.parametrize("outcome", ["approve", "request_changes", "reject"])
def test_decision_after_someone_else_decided_is_409(
    world, client, other_client, in_review, outcome
):
    form = {"revision_hash": in_review.current_revision.content_hash, "reason": "Too late."}
    response = login(client, world.rita).post(
        reverse("post_decide", args=[in_review.pk]), {**form, "outcome": "approve"}
    )
    assert response.status_code == 302
    before = counts()
    response = login(other_client, world.sam).post(
        reverse("post_decide", args=[in_review.pk]), {**form, "outcome": outcome}
    )
    assert response.status_code == 409
    assert "Already decided by rita" in page(response)
    assert counts() == before
    assert list(Decision.objects.values_list("reviewer__username", flat=True)) == ["rita"]


def test_past_publish_time_is_refused_next_to_the_field(world, alice, draft):
    past = (timezone.localtime() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    data = {"text": "Hello", "accounts": [world.lyon_sandbox.pk], "publish_at": past}
    for url in (reverse("post_create"), reverse("post_edit", args=[draft.pk])):
        before = counts()
        response = alice.post(url, data)
        assert response.status_code == 400
        assert "This time has passed" in field_error(page(response), "publish_at")
        assert counts() == before
    draft.refresh_from_db()
    assert draft.publish_at is None


@pytest.mark.parametrize("action", ["post_submit", "post_withdraw", "post_retry", "post_decide"])
def test_get_on_a_post_only_action_is_405(world, alice, draft, action):
    before = counts()
    response = alice.get(reverse(action, args=[draft.pk]))
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert counts() == before
    draft.refresh_from_db()
    assert draft.state == State.DRAFT
