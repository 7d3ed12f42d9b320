"""The live checks in Chromium: typing in the editor shows the findings within about a second,
and "Insert this mention" appends the missing disclaimer (static/reviewflow.js, no inline JS).

Runs against pytest-django's live_server with the real checks (skipped while they are missing).
"""

import time

import pytest
from playwright.sync_api import expect

from approvals import policy
from approvals.models import Disclaimer
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser]

MENTION = "Communication à caractère publicitaire, document non contractuel."


def log_in(page, base, username):
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def type_and_time(page, text, *shown, limit=2.0):
    """Fill the Text field and return how long the checks took to show (at most `limit` s):
    each of `shown` is a (locator, count) the new preview has."""
    started = time.monotonic()
    page.get_by_label("Text").fill(text)
    for locator, count in shown:
        expect(locator).to_have_count(count, timeout=limit * 1000)
    return time.monotonic() - started


def test_editor_shows_findings_as_you_type_and_inserts_the_missing_mention(
    page, live_server, world
):
    for name in ("lexicon", "disclaimer"):
        if not any(name in path for path in policy.CHECKS):
            pytest.skip(f"approvals.policy.CHECKS registers no {name} check yet")
    Disclaimer.objects.create(
        name="Browser test mention", text=MENTION, language="fr", networks=["sandbox"],
        severity="warn",
    )  # fmt: skip
    errors = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: message.type == "error" and errors.append(f"console: {message.text}"),
    )
    page.set_default_timeout(10000)
    log_in(page, live_server.url, "alice")
    page.get_by_role("link", name="New post", exact=True).click()
    page.get_by_label("Lyon branch").check()
    checks = page.locator("#live-checks")

    # a promise of return: highlighted as blocking, and the refusal said before submitting
    blocked = checks.locator("mark.finding-block")
    took = type_and_time(page, "Rendement garanti de 8 % !", (blocked, 1))
    print(f"block finding shown {took:.2f} s after typing")
    assert took < 2.0
    expect(blocked).to_contain_text("garanti")
    expect(checks.locator("#submit-refused")).to_contain_text("Submission will be refused until")

    # harmless text without the required mention: one button inserts it
    text = "Nous vous accueillons samedi pour parler de votre épargne."
    button = checks.get_by_role("button", name="Insert this mention")
    took = type_and_time(page, text, (checks.locator("mark"), 0), (button, 1))
    print(f"missing mention shown {took:.2f} s after typing")
    assert took < 2.0
    expect(checks.locator("#submit-refused")).to_have_count(0)
    expect(button).to_have_attribute("data-insert", MENTION)
    button.click()
    expect(page.get_by_label("Text")).to_have_value(f"{text}\n\n{MENTION}")
    # the preview ran again on the new text: nothing left to fix
    expect(checks).to_contain_text("The automated checks found nothing to fix.")
    expect(checks.get_by_role("button", name="Insert this mention")).to_have_count(0)
    expect(page.locator("#preview .preview .post-text")).to_contain_text(MENTION)
    assert errors == []
