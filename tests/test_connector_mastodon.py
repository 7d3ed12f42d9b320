"""The Mastodon connector against a local instance answering as Mastodon's REST API does
(tests/fakes/mastodon.py), the Idempotency-Key included."""

import pytest
from django.core.exceptions import ValidationError

from approvals.connectors import DeliveryError, get_connector
from approvals.connectors import mastodon as mastodon_module
from approvals.models import Post, Publication, SocialAccount
from approvals.models.posts import State
from tests.fakes.kit import assert_refuses_an_image_not_approved, connected_account, png_bytes
from tests.fakes.kit import released as kit_released
from tests.fakes.mastodon import ACCOUNT, TOKEN, FakeMastodon

from .conftest import through_review

pytestmark = pytest.mark.django_db

TEXT = "Portes ouvertes samedi à Lyon : taux < 3 % & sans frais.\n\nVenez nous voir !"
LINK = "https://example.com/agence/lyon/portes-ouvertes-du-samedi?x=1&y=2"


@pytest.fixture
def fake(settings):
    with FakeMastodon() as server:
        settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": True}
        yield server


@pytest.fixture
def account(world, fake):
    return connected_account(
        team=world.lyon,
        network="mastodon",
        name="Agence Lyon on Mastodon",
        settings={"instance": fake.url + "/", "visibility": "unlisted"},
        token=TOKEN,
        handle="@agence_lyon",
    )


@pytest.fixture
def connector():
    return get_connector("mastodon")


def released(account, text=TEXT, link=LINK, image_path="", image_sha256=None):
    return kit_released(account, text, link, image_path, image_sha256)


def test_a_status_is_posted_with_the_idempotency_key(connector, account, fake):
    delivered = connector.publish(account, released(account), "msg_1")

    [status] = fake.posts
    assert status["_text"] == f"{TEXT} {LINK}"
    assert status["visibility"] == "unlisted"
    assert delivered.external_id == status["id"]
    assert delivered.url == f"{fake.url}/@agence_lyon/{status['id']}"
    [call] = fake.received
    assert (call.method, call.path, call.status) == ("POST", "/api/v1/statuses", 200)
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["idempotency-key"] == "msg_1"
    assert call.content_type == "application/x-www-form-urlencoded"
    assert call.form == {"status": [f"{TEXT} {LINK}"], "visibility": ["unlisted"]}


def test_the_same_key_twice_makes_one_status(connector, account, fake):
    first = connector.publish(account, released(account), "msg_1")
    second = connector.publish(account, released(account), "msg_1")

    assert first == second
    assert len(fake.posts) == 1 and fake.idempotent_replays == 1
    assert [r.status for r in fake.received] == [200, 200]

    connector.publish(account, released(account), "msg_2")  # another key: another status
    assert len(fake.posts) == 2


def test_a_timed_out_post_sent_again_with_its_key_is_not_doubled(
    connector, account, fake, settings
):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "HTTP_TIMEOUT_SECONDS": 0.5}
    fake.stall(1.5, on="POST /api/v1/statuses")

    with pytest.raises(DeliveryError, match="did not answer within 0.5 s") as caught:
        connector.publish(account, released(account), "msg_1")
    assert not caught.value.permanent
    assert fake.wait_idle(timeout=5)
    [status] = fake.posts  # the instance did post it after the client gave up

    again = connector.publish(account, released(account), "msg_1")

    assert again.external_id == status["id"]
    assert len(fake.posts) == 1 and fake.idempotent_replays == 1


def test_find_delivery_finds_the_status_from_its_html(connector, account, fake):
    delivered = connector.publish(account, released(account), "msg_1")
    assert "<br />" not in fake.posts[0]["content"] and "</p><p>" in fake.posts[0]["content"]
    assert '<span class="invisible">' in fake.posts[0]["content"]  # the link, as Mastodon shows

    found = connector.find_delivery(account, "msg_1", released(account))

    assert found == delivered
    me, timeline = fake.received[-2:]
    assert me.path == "/api/v1/accounts/verify_credentials"
    assert timeline.path == f"/api/v1/accounts/{ACCOUNT['id']}/statuses"
    assert timeline.query["limit"] == ["20"]


def test_find_delivery_matches_exact_content_only(connector, account, fake, tmp_path):
    connector.publish(account, released(account), "msg_1")
    path = tmp_path / "affiche.png"
    path.write_bytes(png_bytes())

    assert connector.find_delivery(account, "msg_2", released(account, text=TEXT + "!")) is None
    assert connector.find_delivery(account, "msg_2", released(account, link="")) is None
    with_image = released(account, image_path=str(path))
    assert connector.find_delivery(account, "msg_2", with_image) is None


def test_an_image_is_uploaded_then_attached(connector, account, fake, tmp_path):
    data = png_bytes()
    path = tmp_path / "affiche.png"
    path.write_bytes(data)
    content = released(account, image_path=str(path))

    delivered = connector.publish(account, content, "msg_1")

    upload, create = fake.received
    assert (upload.method, upload.path, upload.status) == ("POST", "/api/v2/media", 200)
    assert upload.content_type == "multipart/form-data"
    assert upload.files["file"].data == data
    assert upload.files["file"].content_type == "image/png"
    [media_id] = fake.media
    assert create.form["media_ids[]"] == [media_id]
    [status] = fake.posts
    assert [m["id"] for m in status["media_attachments"]] == [media_id]
    assert delivered.external_id == status["id"]
    assert connector.find_delivery(account, "msg_1", content) == delivered


def test_an_image_still_processing_is_waited_for(connector, account, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(mastodon_module, "MEDIA_POLL_SECONDS", 0.01)
    path = tmp_path / "affiche.png"
    path.write_bytes(png_bytes())
    fake.process_slowly(polls=2)

    connector.publish(account, released(account, image_path=str(path)), "msg_1")

    [media_id] = fake.media
    assert [(r.method, r.path, r.status) for r in fake.received] == [
        ("POST", "/api/v2/media", 202),
        ("GET", f"/api/v1/media/{media_id}", 206),
        ("GET", f"/api/v1/media/{media_id}", 206),
        ("GET", f"/api/v1/media/{media_id}", 200),
        ("POST", "/api/v1/statuses", 200),
    ]
    assert len(fake.posts) == 1


def test_an_image_that_never_finishes_is_a_retryable_error(
    connector, account, fake, tmp_path, monkeypatch
):
    monkeypatch.setattr(mastodon_module, "MEDIA_POLL_SECONDS", 0.01)
    path = tmp_path / "affiche.png"
    path.write_bytes(png_bytes())
    fake.process_slowly(polls=100)

    with pytest.raises(DeliveryError, match="still processing the image") as caught:
        connector.publish(account, released(account, image_path=str(path)), "msg_1")
    assert not caught.value.permanent and fake.posts == []


def test_retract_deletes_the_status_and_is_idempotent(connector, account, fake):
    delivered = connector.publish(account, released(account), "msg_1")

    connector.retract(account, delivered.external_id)
    connector.retract(account, delivered.external_id)  # already gone: nothing to do

    assert fake.posts == []
    first, second = fake.calls("DELETE", "/api/v1/statuses/")
    assert first.path == f"/api/v1/statuses/{delivered.external_id}"
    assert (first.status, second.status) == (200, 404)


def test_health_ok_and_expired(connector, account, fake):
    health = connector.health(account)
    assert health.ok and health.detail == "connected as @agence_lyon@127.0.0.1"

    account.credential.external_account_id = "42"  # given at connection, for another account
    health = connector.health(account)
    assert not health.ok and health.reconnect and "not the account id 42" in health.detail

    fake.expire()
    health = connector.health(account)
    assert not health.ok and health.reconnect
    assert "expired or revoked" in health.detail and "The access token is invalid" in health.detail


def test_find_delivery_uses_the_known_account_id(connector, account, fake):
    account.credential.external_account_id = ACCOUNT["id"]

    assert connector.find_delivery(account, "msg_1", released(account)) is None
    [timeline] = fake.received  # no verify_credentials call
    assert timeline.path == f"/api/v1/accounts/{ACCOUNT['id']}/statuses"


def test_without_a_credential_nothing_is_sent(connector, account, fake):
    account.credential.delete()
    account = SocialAccount.objects.get(pk=account.pk)

    with pytest.raises(DeliveryError, match="connect this account first") as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.reconnect
    health = connector.health(account)
    assert not health.ok and health.reconnect and "connect this account first" in health.detail
    assert fake.received == []


def test_an_expired_token_asks_to_reconnect(connector, account, fake):
    fake.expire()

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.reconnect and caught.value.permanent
    assert "Mastodon refused the access token" in str(caught.value)


def test_rate_limit_waits_until_x_ratelimit_reset(connector, account, fake):
    fake.fail(429, on="POST /api/v1/statuses", wait=120)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    error = caught.value
    assert not error.permanent and not error.reconnect
    assert 118 <= error.retry_after <= 120  # from the ISO 8601 X-RateLimit-Reset
    assert "Mastodon rate limit reached" in str(error)
    assert fake.posts == []


def test_rate_limit_prefers_retry_after(connector, account, fake):
    fake.fail(429, wait=900, retry_after=7)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.retry_after == 7


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(connector, account, fake, status):
    fake.fail(status)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    assert not caught.value.permanent and caught.value.retry_after is None
    assert f"HTTP {status}" in str(caught.value)


def test_a_duplicate_refused_by_validation_is_permanent(connector, account, fake):
    fake.fail(422, on="POST /api/v1/statuses", message="Validation failed: Text is a duplicate")

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "msg_1")
    error = caught.value
    assert error.permanent and not error.reconnect
    assert "Mastodon refused the post (HTTP 422): Validation failed: Text is a duplicate" == str(
        error
    )


def test_the_instance_s_own_validation_is_said_plainly(connector, account, fake):
    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account, text="x" * 501, link=""), "msg_1")
    assert caught.value.permanent
    assert "Text character limit of 500 exceeded" in str(caught.value)


def test_an_internal_instance_is_refused_without_the_setting(connector, account, fake, settings):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": False}

    with pytest.raises(DeliveryError, match="internal address") as caught:
        connector.publish(account, released(account), "msg_1")
    assert caught.value.permanent and fake.received == []


def test_counting_and_clean_settings(connector, settings):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": True}  # no DNS here
    assert connector.max_length == 500
    assert connector.count("é" * 10, "https://example.com/" + "a" * 80) == 10 + 1 + 23
    assert connector.clean_settings({"instance": "https://mastodon.social/"}) == {
        "instance": "https://mastodon.social",
        "visibility": "public",
    }
    assert connector.clean_settings(
        {"instance": " https://social.example:8443 ", "visibility": "Private"}
    ) == {"instance": "https://social.example:8443", "visibility": "private"}
    for bad in (
        "",
        "mastodon.social",
        "ftp://mastodon.social",
        "javascript:alert(1)",
        "https://",
        "https://mastodon.social/@agence",
        "https://user:secret@mastodon.social",
        "https://mastodon.social:99999",
    ):
        with pytest.raises(ValidationError, match="address of the Mastodon server"):
            connector.clean_settings({"instance": bad})
    for bad in ("direct", "everyone"):
        with pytest.raises(ValidationError, match="public, unlisted, private"):
            connector.clean_settings({"instance": "https://mastodon.social", "visibility": bad})


def test_clean_settings_refuses_an_internal_instance(connector, settings):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": False}
    for internal in ("http://127.0.0.1:3000", "https://10.1.2.3", "https://[::1]"):
        with pytest.raises(ValidationError, match="settings.instance: .*internal address"):
            connector.clean_settings({"instance": internal})


def test_the_account_form_reports_bad_settings(world):
    account = SocialAccount(
        team=world.lyon, network="mastodon", name="M", settings={"instance": "mastodon.social"}
    )
    with pytest.raises(ValidationError) as caught:
        account.full_clean()
    assert "settings" in caught.value.message_dict


def test_approved_post_is_published_on_mastodon_end_to_end(
    world, account, fake, django_capture_on_commit_callbacks
):
    text = "Nos conseillers vous accueillent samedi matin à l'agence de Lyon."
    link = "https://example.com/agence/lyon"
    post = through_review(world, django_capture_on_commit_callbacks, [account], text, link)

    publication = Publication.objects.get(post_id=post.pk)
    [status] = fake.posts
    assert status["_text"] == f"{text} {link}"
    [call] = fake.calls("POST", "/api/v1/statuses")
    assert call.headers["idempotency-key"] == publication.idempotency_key
    assert publication.state == Publication.State.DELIVERED, publication.error
    assert publication.external_id == status["id"]
    assert publication.external_url == status["url"]
    assert Post.objects.get(pk=post.pk).state == State.PUBLISHED


def test_an_image_that_is_not_the_approved_one_is_not_sent(connector, account, fake, tmp_path):
    assert_refuses_an_image_not_approved(connector, account, fake, tmp_path)
