"""The X connector against a local server answering as X's API v2 does (tests/fakes/x.py)."""

import hashlib
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals.connectors import DeliveryError, get_connector
from approvals.models import Publication, SocialAccount
from approvals.models.posts import State
from tests.fakes.kit import (
    assert_refuses_an_image_not_approved,
    connected_account,
    png_bytes,
    route_to,
)
from tests.fakes.kit import released as kit_released
from tests.fakes.x import DUPLICATE, TOKEN, USER, FakeX

from .conftest import through_review

pytestmark = pytest.mark.django_db

TEXT = "Portes ouvertes samedi à Lyon : taux < 3 % & sans frais, venez nous voir."
LINK = "https://example.com/agence/lyon?x=1&y=2"


@pytest.fixture
def fake(settings):
    with FakeX() as server:
        route_to(settings, "x", server)
        yield server


@pytest.fixture
def account(world, fake):
    return connected_account(
        team=world.lyon,
        network="x",
        name="Agence Lyon on X",
        settings={"username": "@agence_lyon"},
        token=TOKEN,
        handle="@agence_lyon",
    )


@pytest.fixture
def connector():
    return get_connector("x")


def released(account, text=TEXT, link=LINK, image_path="", image_sha256=None):
    return kit_released(account, text, link, image_path, image_sha256)


def test_text_and_link_are_posted_as_one_text(connector, account, fake):
    delivered = connector.publish(account, released(account), "msg_1")

    [post] = fake.posts
    assert post["source"] == f"{TEXT} {LINK}"  # X has no link field: appended after a space
    assert post["media_ids"] == []
    assert delivered.external_id == post["id"]
    assert delivered.url == f"https://x.com/agence_lyon/status/{post['id']}"
    [call] = fake.received
    assert (call.method, call.path, call.status) == ("POST", "/2/tweets", 201)
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.content_type == "application/json"
    assert call.json == {"text": f"{TEXT} {LINK}"}


def test_an_image_is_uploaded_then_attached(connector, account, fake, tmp_path):
    data = png_bytes()
    path = tmp_path / "affiche.png"
    path.write_bytes(data)
    content = released(
        account, link="", image_path=str(path), image_sha256=hashlib.sha256(data).hexdigest()
    )

    delivered = connector.publish(account, content, "msg_1")

    upload, create = fake.received
    assert (upload.method, upload.path, upload.status) == ("POST", "/2/media/upload", 200)
    assert upload.content_type == "multipart/form-data"
    assert upload.files["media"].data == data
    assert upload.form["media_category"] == ["tweet_image"]
    assert upload.form["media_type"] == ["image/png"]
    [media_id] = fake.media
    assert create.json == {"text": TEXT, "media": {"media_ids": [media_id]}}
    [post] = fake.posts
    assert post["media_ids"] == [media_id] and delivered.external_id == post["id"]


def test_retract_deletes_the_post_and_is_idempotent(connector, account, fake):
    delivered = connector.publish(account, released(account), "msg_1")

    connector.retract(account, delivered.external_id)
    connector.retract(account, delivered.external_id)  # already gone: nothing to do

    assert fake.posts == []
    first, second = fake.calls("DELETE", "/2/tweets/")
    assert first.path == f"/2/tweets/{delivered.external_id}"
    assert (first.status, second.status) == (200, 404)


def test_health_ok_expired_and_wrong_user(connector, account, fake):
    health = connector.health(account)
    assert health.ok and health.detail == "connected as @agence_lyon"

    account.credential.external_account_id = "42"  # given at connection, for another user
    health = connector.health(account)
    assert not health.ok and health.reconnect and "not the user id 42" in health.detail
    account.credential.external_account_id = USER["id"]

    account.settings = {**account.settings, "username": "someone_else"}
    health = connector.health(account)
    assert not health.ok and health.reconnect and "@agence_lyon, not @someone_else" in health.detail

    fake.expire()
    health = connector.health(account)
    assert not health.ok and health.reconnect
    assert "expired or revoked" in health.detail


def test_without_a_credential_nothing_is_sent(connector, account, fake):
    account.credential.delete()
    account = SocialAccount.objects.get(pk=account.pk)

    with pytest.raises(DeliveryError, match="connect this account first") as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.reconnect
    health = connector.health(account)
    assert not health.ok and health.reconnect and "connect this account first" in health.detail
    assert fake.received == []


def test_a_token_past_its_expiry_without_refresh_token_is_not_sent(connector, account, fake):
    account.credential.expires_at = timezone.now() - timedelta(minutes=1)
    account.credential.save()

    with pytest.raises(DeliveryError, match="expired") as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.reconnect and fake.received == []


def test_an_expired_token_asks_to_reconnect(connector, account, fake):
    fake.expire()

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.reconnect and caught.value.permanent
    assert "X refused the access token (expired or revoked)" in str(caught.value)
    assert fake.posts == []


def test_rate_limit_waits_until_the_reset_time(connector, account, fake):
    fake.fail(429, on="POST /2/tweets", wait=90)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    error = caught.value
    assert not error.permanent and not error.reconnect
    assert 88 <= error.retry_after <= 90  # from x-rate-limit-reset, epoch seconds
    assert "X rate limit reached" in str(error)
    [call] = fake.received
    assert call.status == 429 and fake.posts == []


def test_rate_limit_prefers_retry_after(connector, account, fake):
    fake.fail(429, wait=900, retry_after=7)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.retry_after == 7 and "wait 7 s" in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(connector, account, fake, status):
    fake.fail(status)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    assert not caught.value.permanent and caught.value.retry_after is None
    assert f"HTTP {status}" in str(caught.value)


def test_an_upload_failure_stops_before_posting(connector, account, fake, tmp_path):
    path = tmp_path / "affiche.png"
    path.write_bytes(png_bytes())
    fake.fail(503, on="POST /2/media/upload")

    with pytest.raises(DeliveryError, match="HTTP 503") as caught:
        connector.publish(account, released(account, image_path=str(path)), "msg_1")
    assert not caught.value.permanent
    assert fake.calls("POST", "/2/tweets") == [] and fake.posts == []


def test_a_slow_answer_times_out_and_find_delivery_finds_the_post(
    connector, account, fake, settings
):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "HTTP_TIMEOUT_SECONDS": 0.5}
    fake.stall(1.5, on="POST /2/tweets")

    with pytest.raises(DeliveryError, match="did not answer within 0.5 s") as caught:
        connector.publish(account, released(account), "msg_1")
    assert not caught.value.permanent
    assert fake.wait_idle(timeout=5)
    [post] = fake.posts  # X did publish it after the client gave up

    found = connector.find_delivery(account, "msg_1", released(account))
    assert found is not None and found.external_id == post["id"]
    assert found.url == f"https://x.com/agence_lyon/status/{post['id']}"
    me, timeline = fake.received[-2:]
    assert me.path == "/2/users/me"
    assert timeline.path == f"/2/users/{USER['id']}/tweets"
    assert timeline.query["max_results"] == ["10"]
    assert timeline.query["tweet.fields"] == ["entities"]

    # Sending again is refused by X as a duplicate; the connector finds its own post instead.
    again = connector.publish(account, released(account), "msg_1")
    assert again == found and len(fake.posts) == 1


def test_find_delivery_reads_through_t_co_links_escapes_and_the_photo_link(
    connector, account, fake, tmp_path
):
    path = tmp_path / "affiche.png"
    path.write_bytes(png_bytes())
    content = released(account, image_path=str(path))
    connector.publish(account, content, "msg_1")
    [post] = fake.posts
    shown = fake.tweets[post["id"]]["text"]
    assert LINK not in shown and "https://t.co/" in shown and "&lt; 3 % &amp;" in shown

    found = connector.find_delivery(account, "msg_1", content)

    assert found is not None and found.external_id == post["id"]


def test_find_delivery_matches_exact_content_only(connector, account, fake, tmp_path):
    connector.publish(account, released(account), "msg_1")

    assert connector.find_delivery(account, "msg_2", released(account, text=TEXT + "!")) is None
    assert connector.find_delivery(account, "msg_2", released(account, link="")) is None
    other = released(account, link="https://example.com/other")
    assert connector.find_delivery(account, "msg_2", other) is None
    path = tmp_path / "affiche.png"
    path.write_bytes(png_bytes())
    with_image = released(account, image_path=str(path))
    assert connector.find_delivery(account, "msg_2", with_image) is None


def test_find_delivery_uses_the_known_user_id(connector, account, fake):
    account.credential.external_account_id = USER["id"]
    account.credential.save()

    assert connector.find_delivery(account, "msg_1", released(account)) is None
    [timeline] = fake.received  # no /2/users/me call
    assert timeline.path == f"/2/users/{USER['id']}/tweets"


def test_a_duplicate_that_is_not_ours_is_refused_permanently_in_plain_words(
    connector, account, fake
):
    fake.fail(403, on="POST /2/tweets", message=DUPLICATE)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    error = caught.value
    assert error.permanent and not error.reconnect
    assert "duplicate content" in str(error) and "identical post" in str(error)


def test_another_refusal_says_what_x_said(connector, account, fake):
    fake.fail(403, on="POST /2/tweets", message="You are not permitted to perform this action.")

    with pytest.raises(DeliveryError, match="not permitted") as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.permanent and "HTTP 403" in str(caught.value)


def test_an_invalid_request_gives_x_s_own_words(connector, account, fake):
    with pytest.raises(DeliveryError, match="Post text or media is required") as caught:
        connector.publish(account, released(account, text=" ", link=""), "msg_1")
    assert caught.value.permanent and "HTTP 400" in str(caught.value)


def test_internal_addresses_are_refused_without_the_setting(connector, account, fake, settings):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": False}

    with pytest.raises(DeliveryError, match="internal address") as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.permanent and fake.received == []


def test_counting_is_x_s_and_clean_settings(connector):
    assert connector.max_length == 280
    assert connector.count("é" * 10, "https://example.com/" + "a" * 80) == 10 + 1 + 23
    assert connector.count("中文", "") == 4  # X weighs CJK characters 2
    assert connector.clean_settings({}) == {"username": ""}
    assert connector.clean_settings({"username": " @Agence_Lyon "}) == {"username": "Agence_Lyon"}
    for bad in ("agence lyon", "a" * 16, "https://x.com/agence", "agence-lyon"):
        with pytest.raises(ValidationError, match="1 to 15 letters, digits or underscores"):
            connector.clean_settings({"username": bad})


def test_the_account_form_reports_bad_settings(world):
    account = SocialAccount(
        team=world.lyon, network="x", name="X", settings={"username": "no spaces"}
    )
    with pytest.raises(ValidationError) as caught:
        account.full_clean()
    assert "settings" in caught.value.message_dict


def test_approved_post_is_published_on_x_end_to_end(
    world, account, fake, django_capture_on_commit_callbacks
):
    text = "Nos conseillers vous accueillent samedi matin à l'agence de Lyon."
    link = "https://example.com/agence/lyon"
    post = through_review(world, django_capture_on_commit_callbacks, [account], text, link)
    publication = Publication.objects.get(post=post)
    [tweet] = fake.posts
    assert tweet["source"] == f"{text} {link}"
    assert publication.state == Publication.State.DELIVERED, publication.error
    assert publication.external_id == tweet["id"]
    assert publication.external_url == f"https://x.com/agence_lyon/status/{tweet['id']}"
    post.refresh_from_db()
    assert post.state == State.PUBLISHED


def test_an_image_that_is_not_the_approved_one_is_not_sent(connector, account, fake, tmp_path):
    assert_refuses_an_image_not_approved(connector, account, fake, tmp_path)
