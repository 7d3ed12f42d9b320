"""The webhook connector against a real HTTP receiver that verifies signatures independently."""

import base64
import os

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from standardwebhooks.webhooks import Webhook

from approvals.connectors import get_connector
from approvals.models import LedgerEntry, Publication, SocialAccount
from approvals.models.posts import State

from .conftest import through_review

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _retry_at_once(settings):
    """The connector makes one attempt per call and the engine retries: with no backoff, each
    retry is due at once, so the eager tasks run the attempts back to back."""
    settings.REVIEWFLOW = {
        **settings.REVIEWFLOW,
        "DELIVERY_BACKOFF_SECONDS": 0,
        "DELIVERY_MAX_ATTEMPTS": 4,
    }


TEXT = "Nos conseillers vous accueillent samedi à Lyon. Rates < 3% & no fees — ask us."
LINK = "https://example.com/agence/lyon?x=1&y=2"


def publish_through(world, account, callbacks_fixture):
    """alice drafts and submits, rita approves (which releases); the delivery runs on commit."""
    return through_review(world, callbacks_fixture, [account], TEXT, LINK)


def test_clean_generates_a_secret_standard_webhooks_accepts(hook_account):
    secret = hook_account.settings["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) >= 16
    Webhook(secret)  # the independent implementation takes it as is


def test_delivered_once_signed_with_exactly_the_approved_content(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, client
):
    post = publish_through(world, hook_account, django_capture_on_commit_callbacks)

    assert post.state == State.PUBLISHED
    revision = post.approved_revision
    publication = Publication.objects.get(post=post)
    [request] = webhook_receiver.received
    assert request.verified, request.error
    assert request.status == 200
    assert request.webhook_id == publication.idempotency_key
    assert request.payload["type"] == "post.published"
    data = request.payload["data"]
    assert data["text"] == revision.text == TEXT
    assert data["link"] == revision.link == LINK
    assert data["content_hash"] == revision.content_hash
    assert data["post_id"] == post.pk and data["revision"] == revision.number
    assert webhook_receiver.delivered_ids == [publication.idempotency_key]

    assert publication.state == Publication.State.DELIVERED
    assert publication.external_id == "rcv-1"
    assert publication.external_url == "https://receiver.example/p/1"
    entry = LedgerEntry.objects.get(event="publication.delivered")
    assert entry.payload["external_id"] == "rcv-1"
    assert entry.payload["content_hash"] == revision.content_hash

    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert 'href="https://receiver.example/p/1"' in page and ">rcv-1</a>" in page


def test_transient_errors_are_retried_with_the_same_webhook_id(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks
):
    webhook_receiver.fail(503, times=2)

    post = publish_through(world, hook_account, django_capture_on_commit_callbacks)

    assert post.state == State.PUBLISHED
    publication = Publication.objects.get(post=post)
    key = publication.idempotency_key
    assert [r.status for r in webhook_receiver.received] == [503, 503, 200]
    assert {r.webhook_id for r in webhook_receiver.received} == {key}
    assert all(r.verified for r in webhook_receiver.received)
    assert webhook_receiver.delivered_ids == [key]
    # Three attempts by the engine (one per task run), each on record.
    assert publication.attempts == 3
    assert [a.ok for a in publication.delivery_attempts.all()] == [False, False, True]
    assert "HTTP 503" in publication.delivery_attempts.first().detail


def test_a_receiver_slower_than_the_timeout_is_retried_with_the_same_webhook_id(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, settings
):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "WEBHOOK_TIMEOUT_SECONDS": 0.5}
    webhook_receiver.stall(1.5)

    post = publish_through(world, hook_account, django_capture_on_commit_callbacks)

    assert post.state == State.PUBLISHED
    publication = Publication.objects.get(post=post)
    assert publication.external_id == "rcv-1"
    assert webhook_receiver.wait_idle(timeout=5)
    first, second = webhook_receiver.received
    assert first.verified and second.verified
    assert first.webhook_id == second.webhook_id == publication.idempotency_key
    # The slow receiver did process the first request after the client had given up: the
    # retry is a duplicate it can drop, because the webhook-id is the same.
    assert first.late
    assert webhook_receiver.duplicates == 1
    assert webhook_receiver.delivered_ids == [publication.idempotency_key]


def test_giving_up_shows_the_error_and_retry_publishes_with_the_same_webhook_id(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, client, settings
):
    attempts = settings.REVIEWFLOW["DELIVERY_MAX_ATTEMPTS"]
    webhook_receiver.always(500)

    post = publish_through(world, hook_account, django_capture_on_commit_callbacks)

    assert post.state == State.FAILED
    publication = Publication.objects.get(post=post)
    assert publication.state == Publication.State.FAILED
    assert "HTTP 500" in publication.error
    assert f"{attempts} attempts" in publication.error
    assert len(webhook_receiver.received) == attempts
    assert webhook_receiver.delivered_ids == []
    assert LedgerEntry.objects.filter(event="publication.failed").count() == 1

    client.force_login(world.alice)
    response = client.get(reverse("post_detail", args=[post.pk]))
    page = response.content.decode()
    assert response.status_code == 200
    assert "HTTP 500" in page and f"{attempts} attempts" in page
    assert "Retry publishing" in page

    webhook_receiver.fix()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("post_retry", args=[post.pk]))
    assert response.status_code == 302

    post.refresh_from_db()
    publication.refresh_from_db()
    assert post.state == State.PUBLISHED
    assert publication.state == Publication.State.DELIVERED and publication.error == ""
    assert {r.webhook_id for r in webhook_receiver.received} == {publication.idempotency_key}
    assert len(webhook_receiver.received) == attempts + 1
    assert webhook_receiver.delivered_ids == [publication.idempotency_key]
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert "Retry publishing" not in page


@pytest.mark.parametrize("status", [400, 410])
def test_a_permanent_refusal_is_not_retried(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, status
):
    webhook_receiver.refuse(status)

    post = publish_through(world, hook_account, django_capture_on_commit_callbacks)

    assert post.state == State.FAILED
    assert [r.status for r in webhook_receiver.received] == [status]
    error = Publication.objects.get(post=post).error
    assert "refused" in error and f"HTTP {status}" in error


def test_the_receiver_really_verifies_signatures(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks
):
    right_secret = webhook_receiver.secret
    webhook_receiver.secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()

    post = publish_through(world, hook_account, django_capture_on_commit_callbacks)

    [request] = webhook_receiver.received
    assert not request.verified and "signature" in request.error.lower()
    assert request.status == 401
    assert webhook_receiver.delivered_ids == []
    assert post.state == State.FAILED
    assert "refused" in Publication.objects.get(post=post).error
    # The very same request verifies with the account's secret: only the secret differed.
    assert Webhook(right_secret).verify(request.body, request.headers)["data"]["text"] == TEXT


@pytest.mark.parametrize(
    "config, message",
    [
        ({"url": "ftp://receiver.example/hook", "secret": ""}, "http or https URL"),
        ({"url": "javascript:alert(1)", "secret": ""}, "http or https URL"),
        ({"url": "https://", "secret": ""}, "http or https URL"),
        ({"secret": ""}, "http or https URL"),
        ({"url": "https://receiver.example/hook", "secret": "whsec_not base64!"}, "whsec_"),
        ({"url": "https://receiver.example/hook", "secret": "c2VjcmV0c2VjcmV0c2VjcmV0"}, "whsec_"),
        (
            {"url": "https://receiver.example/hook", "secret": "whsec_" + "c2hvcnQ="},
            "16 or more bytes",
        ),
    ],
)
def test_clean_settings_refuses_bad_urls_and_secrets(world, config, message):
    with pytest.raises(ValidationError) as raised:
        get_connector("webhook").clean_settings(config)
    assert message in " ".join(raised.value.messages)

    account = SocialAccount(team=world.lyon, network="webhook", name="Bad", settings=config)
    with pytest.raises(ValidationError) as raised:
        account.full_clean()
    assert message in " ".join(raised.value.message_dict["settings"])


def test_clean_settings_keeps_a_valid_secret(world):
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    cleaned = get_connector("webhook").clean_settings(
        {"url": "  https://receiver.example/hook  ", "secret": secret}
    )
    assert cleaned == {"url": "https://receiver.example/hook", "secret": secret}


@pytest.mark.parametrize(
    "answer, external_id, external_url",
    [
        ({"id": "abc", "url": "javascript:alert(1)"}, "abc", ""),
        ({"id": "abc", "url": "https://receiver.example/" + "p" * 2100}, "abc", ""),
        ({"id": "abc", "url": "http://[::1"}, "abc", ""),
        (
            {"id": "x" * 300, "url": "https://receiver.example/ok"},
            "x" * 200,
            "https://receiver.example/ok",
        ),
        (["not", "an", "object"], None, ""),
    ],
)
def test_an_odd_answer_still_counts_as_delivered(
    world,
    hook_account,
    webhook_receiver,
    django_capture_on_commit_callbacks,
    answer,
    external_id,
    external_url,
):
    webhook_receiver.answer_with(answer)

    post = publish_through(world, hook_account, django_capture_on_commit_callbacks)

    publication = Publication.objects.get(post=post)
    assert post.state == State.PUBLISHED, publication.error
    assert len(webhook_receiver.received) == 1
    assert publication.external_id == (external_id or publication.idempotency_key)
    assert publication.external_url == external_url
