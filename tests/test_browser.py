"""The whole loop in Chromium, through the real UI: draft, review, changes, approval, the feed.

Runs against pytest-django's live_server with Celery eager, so an approval publishes to the
sandbox network before the reviewer's page comes back.
"""

import hashlib
import os
import re
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from approvals import workflow
from approvals.models import Post
from approvals.models.posts import State
from tests.conftest import PASSWORD
from tests.test_images import PNG

pytestmark = [pytest.mark.browser]

SCREENSHOTS = Path(settings.BASE_DIR) / "docs" / "screenshots"


class BrowserErrors:
    """Uncaught page errors and console errors, collected while a test runs."""

    def __init__(self, page):
        self.errors = []
        self.expected = []  # (status, url path) of 4xx answers a test provokes on purpose
        page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        page.on("console", self._console)

    def expect(self, status, path):
        self.expected.append((status, path))

    def _console(self, message):
        if message.type != "error":
            return
        url = message.location.get("url", "")
        for status, path in self.expected:
            if f"status of {status}" in message.text and url.endswith(path):
                return
        self.errors.append(f"console: {message.text} at {url}")

    def assert_none(self):
        assert self.errors == []


@pytest.fixture
def browser_page(page):
    page.set_default_timeout(10000)
    return page


def log_in(page, base, username):
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def log_out(page):
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def unlabelled_fields(page):
    """Visible form controls that no <label> names."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input, textarea, select')]
            .filter(el => el.type !== 'hidden' && el.offsetParent !== null)
            .filter(el => !el.labels || el.labels.length === 0)
            .map(el => el.name || el.id || el.outerHTML)"""
    )


def test_whole_review_loop_in_the_browser(browser_page, live_server, world):
    page, base = browser_page, live_server.url
    errors = BrowserErrors(page)
    first_text = "Nos conseillers vous accueillent samedi matin à Lyon."
    second_text = "Nos conseillers vous accueillent samedi à Lyon. Capital at risk."

    # alice drafts a post and sees the live preview
    log_in(page, base, "alice")
    page.get_by_role("link", name="New post", exact=True).click()
    page.get_by_label("Text").fill(first_text)
    page.get_by_label("Lyon branch").check()
    preview = page.locator("#preview")
    expect(preview).to_contain_text(first_text)
    expect(preview).to_contain_text("characters left")
    assert unlabelled_fields(page) == []
    page.get_by_role("button", name="Save draft").click()
    expect(page.get_by_role("status")).to_contain_text("Draft saved.")
    post = Post.objects.get()
    assert post.current_revision.text == first_text
    page.get_by_role("button", name="Submit for review").click()
    expect(page.get_by_role("status")).to_contain_text("Submitted for review.")
    expect(page.locator("h1 .state")).to_have_text("In review")
    log_out(page)

    # rita asks for changes; an empty reason is refused next to the field, nothing changes
    log_in(page, base, "rita")
    page.get_by_role("navigation").get_by_role("link", name="Review queue").click()
    page.get_by_role("link", name=re.compile(f"#{post.pk} ")).click()
    errors.expect(400, f"/posts/{post.pk}/decide/")
    page.get_by_role("button", name="Request changes").click()
    expect(page.locator("#id_reason_error")).to_contain_text("Say why")
    expect(page.locator("h1 .state")).to_have_text("In review")
    post.refresh_from_db()
    assert post.state == State.IN_REVIEW and not post.decisions.exists()
    page.get_by_label("Reason").fill("Add the risk warning, please.")
    page.get_by_role("button", name="Request changes").click()
    expect(page.locator("h1 .state")).to_have_text("Changes requested")
    log_out(page)

    # alice reads the reason, edits and resubmits
    log_in(page, base, "alice")
    page.get_by_role("link", name=first_text[:40]).click()
    expect(page.locator(".timeline .reason")).to_contain_text("Add the risk warning, please.")
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Text").fill(second_text)
    expect(page.locator("#preview")).to_contain_text("Capital at risk.")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text("Changes saved.")
    page.get_by_role("button", name="Submit for review").click()
    expect(page.locator("h1 .state")).to_have_text("In review")
    log_out(page)

    # sam, who never saw the post, gets the diff against the revision rita decided on
    log_in(page, base, "sam")
    page.get_by_role("navigation").get_by_role("link", name="Review queue").click()
    page.get_by_role("link", name=re.compile(f"#{post.pk} ")).click()
    expect(page.get_by_role("heading", name="Changes since revision 1")).to_be_visible()
    expect(page.locator(".diff ins").first).to_be_visible()
    inserted = " ".join(page.locator(".diff ins").all_inner_texts())
    deleted = " ".join(page.locator(".diff del").all_inner_texts())
    assert "Capital" in inserted and "matin" in deleted
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("h1 .state")).to_have_text("Published")
    external = page.locator(".publication-delivered td").nth(2)
    expect(external).to_have_text(re.compile(r"^sandbox-\d+$"))

    # the sandbox network shows the approved text
    external.get_by_role("link").click()
    expect(page.locator(".sandbox-post .post-text").first).to_have_text(second_text)
    post.refresh_from_db()
    assert post.state == State.PUBLISHED
    assert post.approved_revision.text == second_text
    errors.assert_none()


def test_logged_out_visits_and_bad_credentials(browser_page, live_server, world, draft):
    page, base = browser_page, live_server.url
    errors = BrowserErrors(page)
    for path in (f"/posts/{draft.pk}/", "/review/"):
        page.goto(base + path)
        expect(page).to_have_url(re.compile(r"/login/\?next="))
        expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert draft.current_revision.text not in page.content()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("enter a correct username and password")
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    errors.assert_none()


XSS_LINES = [
    "<script>window.__xss=1</script>",
    '<img src=x onerror="window.__xss=1">',
    '"><svg onload=window.__xss=1>',
    "javascript:window.__xss=1",
    "https://example.com/a?b=1&c=2",
    "</textarea><script>window.__xss=1</script>",
    '<a href="javascript:window.__xss=1">click</a>',
]


def assert_inert(page, text_locator):
    assert page.evaluate("typeof window.__xss") == "undefined"
    expect(text_locator).to_contain_text("<script>window.__xss=1</script>")
    expect(page.locator('a[href="https://example.com/a?b=1&c=2"]').first).to_be_visible()
    js_links = page.evaluate(
        """() => [...document.querySelectorAll('[href], [src], [action], [formaction]')]
            .map(el => el.getAttribute('href') || el.getAttribute('src')
                       || el.getAttribute('action') || el.getAttribute('formaction') || '')
            .filter(v => v.replace(/[\\s\\u0000-\\u001f]/g, '').toLowerCase()
                           .startsWith('javascript:'))"""
    )
    assert js_links == []
    assert page.locator("svg, img, iframe").count() == 0


def test_xss_payloads_stay_text_in_the_browser(browser_page, live_server, world):
    page, base = browser_page, live_server.url
    errors = BrowserErrors(page)
    text = "\n".join(XSS_LINES)
    post = workflow.create_post(world.alice, text=text, account_ids=[world.lyon_sandbox.pk])
    workflow.submit(post.pk, world.alice, comment="<script>window.__xss=1</script>")

    log_in(page, base, "rita")
    page.goto(f"{base}/posts/{post.pk}/")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()
    assert_inert(page, page.locator("#post-text"))
    expect(page.locator(".timeline .comment")).to_contain_text("<script>")
    page.goto(f"{base}/review/")
    assert page.evaluate("typeof window.__xss") == "undefined"
    expect(page.locator("table.queue")).to_contain_text("<script>")
    log_out(page)

    post.refresh_from_db()
    workflow.decide(
        post.pk, world.rita, outcome="approve", revision_hash=post.current_revision.content_hash
    )
    post.refresh_from_db()
    assert post.state == State.PUBLISHED  # eager Celery: published on commit

    log_in(page, base, "alice")
    assert page.evaluate("typeof window.__xss") == "undefined"
    expect(page.locator(".post-list")).to_contain_text("<script>window.__xss=1</script>")
    page.goto(f"{base}/posts/{post.pk}/")
    assert_inert(page, page.locator("#post-text"))
    expect(page.get_by_role("heading", name="Actions")).to_have_count(0)  # none left to take
    page.goto(f"{base}/sandbox/{world.lyon_sandbox.pk}/")
    assert_inert(page, page.locator(".sandbox-post .post-text").first)
    errors.assert_none()


def test_readme_screenshots(browser_page, live_server, world, tmp_path):
    """The main pages render; with REVIEWFLOW_SCREENSHOTS=1 they refresh docs/screenshots/."""
    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": 1280, "height": 900})
    folder = SCREENSHOTS if os.environ.get("REVIEWFLOW_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    lyon = [world.lyon_sandbox.pk]

    def shot(name, full_page=False):
        page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)

    published = workflow.create_post(
        world.alice,
        text="Nos conseillers vous accueillent samedi de 9 h à 12 h. "
        "Prenez rendez-vous sur https://example.com/rdv",
        account_ids=lyon,
    )
    workflow.submit(published.pk, world.alice, comment="Pour la newsletter de samedi.")
    published.refresh_from_db()
    workflow.decide(
        published.pk,
        world.rita,
        outcome="request_changes",
        reason="Précisez l'adresse de l'agence.",
        revision_hash=published.current_revision.content_hash,
    )
    workflow.edit_post(
        published.pk,
        world.alice,
        text="Nos conseillers vous accueillent samedi de 9 h à 12 h, 12 rue de la République. "
        "Prenez rendez-vous sur https://example.com/rdv",
        account_ids=lyon,
    )
    workflow.submit(published.pk, world.alice, comment="Adresse ajoutée.")
    published.refresh_from_db()
    workflow.decide(
        published.pk,
        world.sam,
        outcome="approve",
        revision_hash=published.current_revision.content_hash,
    )

    reviewed = workflow.create_post(
        world.alice,
        text="Taux fixe à 3,2 % sur 20 ans, sans frais de dossier jusqu'au 30 juin.",
        account_ids=lyon,
    )
    workflow.submit(reviewed.pk, world.alice)
    reviewed.refresh_from_db()
    workflow.decide(
        reviewed.pk,
        world.rita,
        outcome="request_changes",
        reason="Ajoutez le TAEG et la mention du coût total du crédit.",
        revision_hash=reviewed.current_revision.content_hash,
    )
    workflow.edit_post(
        reviewed.pk,
        world.alice,
        text="Taux fixe à 3,2 % sur 20 ans (TAEG 3,45 %), sans frais de dossier jusqu'au 30 juin. "
        "Un crédit vous engage et doit être remboursé.",
        account_ids=lyon,
    )
    workflow.submit(reviewed.pk, world.alice, comment="TAEG et mention légale ajoutés.")
    workflow.create_post(
        world.alice, text="Retrouvez-nous au salon de l'épargne, stand B12.", account_ids=lyon
    )

    log_in(page, base, "alice")
    shot("home")
    page.get_by_role("link", name="New post", exact=True).click()
    page.get_by_label("Text").fill(
        "Journée portes ouvertes le 14 juin : le meilleur placement de l'année, noté 5 étoiles "
        "par nos clients ! Performance de +8 % en 2025. Programme sur https://bit.ly/po-lyon"
    )
    page.get_by_label("Lyon branch").check()
    expect(page.locator("#preview")).to_contain_text("characters left")
    expect(page.locator("#preview mark").first).to_be_visible()
    shot("editor", full_page=True)
    page.goto(f"{base}/posts/{published.pk}/")
    shot("post_published", full_page=True)
    page.goto(f"{base}/sandbox/{world.lyon_sandbox.pk}/")
    shot("sandbox_feed")
    log_out(page)

    log_in(page, base, "sam")
    page.goto(f"{base}/review/")
    shot("review_queue")
    page.goto(f"{base}/posts/{reviewed.pk}/")
    expect(page.locator(".diff")).to_be_visible()
    shot("review", full_page=True)


def test_a_new_post_goes_to_review_in_one_click(browser_page, live_server, world):
    page, base = browser_page, live_server.url
    errors = BrowserErrors(page)
    log_in(page, base, "alice")
    page.get_by_role("link", name="New post", exact=True).click()
    page.get_by_label("Text").fill("Portes ouvertes samedi à Lyon.")
    page.get_by_label("Lyon branch").check()
    page.get_by_label("Note to reviewers").fill("Pour la campagne de printemps.")
    assert unlabelled_fields(page) == []
    page.get_by_role("button", name="Submit for review", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Submitted for review.")
    expect(page.locator("h1 .state")).to_have_text("In review")
    expect(page.locator(".timeline")).to_contain_text("Pour la campagne de printemps.")
    post = Post.objects.get()
    assert post.state == State.IN_REVIEW and post.revisions.count() == 1
    errors.assert_none()


def loaded_width(image):
    """The image's natural width once the browser has loaded it, 0 if it could not: visible is
    not loaded."""
    return image.evaluate(
        """img => img.complete ? img.naturalWidth : new Promise(done => {
            img.addEventListener("load", () => done(img.naturalWidth));
            img.addEventListener("error", () => done(0));
        })"""
    )


def test_the_image_chosen_stays_when_the_post_is_refused(
    browser_page, live_server, world, media_root
):
    """Browsers empty a file input when the form comes back: the image is kept for her."""
    page, base = browser_page, live_server.url
    errors = BrowserErrors(page)
    errors.expect(400, "/posts/new/")
    log_in(page, base, "alice")
    page.get_by_role("link", name="New post", exact=True).click()
    page.get_by_label("Text").fill("Rendement garanti de 8 % !")
    page.get_by_label("Lyon branch").check()
    page.locator("input[name=image]").set_input_files(
        files=[{"name": "photo.png", "mimeType": "image/png", "buffer": PNG}]
    )
    page.get_by_role("button", name="Submit for review", exact=True).click()
    expect(page.locator("#post-form").get_by_role("alert")).to_contain_text("garanti")
    expect(page.locator(".kept-image")).to_contain_text("Kept from your last try: photo.png")
    kept = page.get_by_alt_text("The image you chose")
    expect(kept).to_be_visible()
    assert loaded_width(kept) == 1
    page.get_by_label("Text").fill("Portes ouvertes samedi à Lyon.")
    page.get_by_role("button", name="Submit for review", exact=True).click()
    expect(page.get_by_role("status")).to_contain_text("Submitted for review.")
    assert loaded_width(page.get_by_alt_text("Image of revision 1")) == 1
    assert Post.objects.get().current_revision.image_sha256 == hashlib.sha256(PNG).hexdigest()
    errors.assert_none()


def test_a_compliance_admin_exports_the_ledger_for_an_auditor(
    browser_page, live_server, world, media_root, tmp_path
):
    """carla asks for one post's entries in the admin; the list refreshes itself until the file
    is written (Celery eager: at once), and the download is the file the list describes.
    With REVIEWFLOW_SCREENSHOTS=1 the list refreshes docs/screenshots/ledger_exports.png."""
    from approvals import ledger
    from approvals.models import LedgerExport

    page, base = browser_page, live_server.url
    page.set_viewport_size({"width": 1280, "height": 700})
    errors = BrowserErrors(page)
    post = workflow.create_post(
        world.alice, text="Portes ouvertes samedi.", account_ids=[world.lyon_sandbox.pk]
    )
    workflow.submit(post.pk, world.alice)
    log_in(page, base, "carla")
    page.goto(f"{base}/admin/approvals/ledgerentry/")
    expect(page.locator("code").first).to_contain_text(":")  # the head's anchor
    page.get_by_role("link", name="Export for an auditor").click()
    page.get_by_label("Post").fill(str(post.pk))
    page.get_by_role("button", name="Prepare the export").click()
    expect(page.locator(".messagelist")).to_contain_text("is asked for: a worker writes it")
    download_link = page.get_by_role("link", name="Download")
    expect(download_link).to_be_visible()
    export = LedgerExport.objects.get()
    assert export.state == "ready" and export.entries == 2
    folder = SCREENSHOTS if os.environ.get("REVIEWFLOW_SCREENSHOTS") == "1" else tmp_path
    page.screenshot(path=str(folder / "ledger_exports.png"))
    with page.expect_download() as download:
        download_link.click()
    data = Path(download.value.path()).read_bytes()
    assert hashlib.sha256(data).hexdigest() == export.sha256
    assert ledger.verify_export(data.decode().splitlines(keepends=True)) == (None, 2)
    errors.assert_none()
