"""The Facebook Pages connector against a local server answering as the Graph API does."""

import hashlib

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from approvals.connectors import DeliveryError, get_connector
from approvals.models import Publication, SocialAccount
from approvals.models.posts import State
from tests.fakes.facebook import PAGE_ID, FakeFacebook
from tests.fakes.kit import (
    assert_refuses_an_image_not_approved,
    connected_account,
    png_bytes,
    route_to,
)
from tests.fakes.kit import released as kit_released

from .conftest import through_review

pytestmark = pytest.mark.django_db

TEXT = "Portes ouvertes samedi à Lyon : taux < 3 %, sans frais — venez nous voir !"
LINK = "https://example.com/agence/lyon?x=1&y=2"


@pytest.fixture
def fake(settings):
    with FakeFacebook() as server:
        route_to(settings, "facebook", server)
        yield server


@pytest.fixture
def account(world, fake):
    return connected_account(
        team=world.lyon,
        network="facebook",
        name="Agence Lyon on Facebook",
        settings={"page_id": PAGE_ID},
        token=fake.token,
        external_account_id=PAGE_ID,
    )


@pytest.fixture
def connector():
    return get_connector("facebook")


@pytest.fixture
def image(tmp_path):
    data = png_bytes()
    path = tmp_path / "affiche.png"
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest(), data


def released(account, text=TEXT, link=LINK, image_path="", image_sha256=None):
    return kit_released(account, text, link, image_path, image_sha256)


def refusal(connector, account, content=None):
    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, content or released(account), "key-1")
    return caught.value


def test_text_and_link_go_to_the_page_feed(connector, account, fake):
    delivered = connector.publish(account, released(account), "key-1")

    [post] = fake.published
    assert (post.message, post.link, post.image) == (TEXT, LINK, None)
    assert delivered.external_id == post.id and post.id.startswith(f"{PAGE_ID}_")
    assert delivered.url == f"https://www.facebook.com/{PAGE_ID}/posts/{post.id.split('_')[1]}"
    [call] = fake.received
    assert (call.method, call.path) == ("POST", f"/v23.0/{PAGE_ID}/feed")
    assert call.content_type == "application/x-www-form-urlencoded"
    assert call.form["access_token"] == [fake.token]
    assert "access_token" not in call.query  # never in the URL


def test_an_image_is_a_page_photo_with_the_link_in_its_caption(connector, account, fake, image):
    path, sha256, data = image

    delivered = connector.publish(
        account, released(account, image_path=path, image_sha256=sha256), "key-1"
    )

    [post] = fake.published
    assert post.image == data
    assert post.message == f"{TEXT}\n{LINK}"
    assert delivered.external_id == post.id  # the post, not the photo, so retract removes it
    [call] = fake.received
    assert (call.method, call.path) == ("POST", f"/v23.0/{PAGE_ID}/photos")
    assert call.content_type == "multipart/form-data"
    upload = call.files["source"]
    assert (upload.filename, upload.content_type, upload.data) == ("affiche.png", "image/png", data)
    assert call.form["published"] == ["true"]


def test_an_image_that_is_not_the_approved_one_is_not_sent(connector, account, fake, tmp_path):
    assert_refuses_an_image_not_approved(connector, account, fake, tmp_path)


def test_retract_deletes_the_post(connector, account, fake):
    delivered = connector.publish(account, released(account), "key-1")

    connector.retract(account, delivered.external_id)
    connector.retract(account, delivered.external_id)  # already gone (code 100/33): fine

    assert fake.published == []
    delete = fake.received[1]
    assert (delete.method, delete.path) == ("DELETE", f"/v23.0/{delivered.external_id}")
    assert delete.bearer == fake.token and "access_token" not in delete.query
    with pytest.raises(DeliveryError, match="not a Facebook post id"):
        connector.retract(account, "../me")


def test_health_ok_expired_and_wrong_token(connector, account, fake):
    health = connector.health(account)
    assert health.ok and "Agence Lyon" in health.detail

    fake.expire_token()
    health = connector.health(account)
    assert not health.ok and health.reconnect
    assert "token expired" in health.detail and "reconnect" in health.detail

    fake.expired = False
    account.credential.access_token = fake.user_token  # a user token, not the Page's
    account.credential.save()
    health = connector.health(account)
    assert not health.ok and health.reconnect
    assert "Alice Martin" in health.detail and "Page access token" in health.detail


def test_expired_token_code_190_with_http_400_asks_to_reconnect(connector, account, fake):
    fake.expire_token()

    error = refusal(connector, account)
    assert error.reconnect and error.permanent
    assert "the token expired" in str(error) and "reconnect the account" in str(error)
    assert fake.published == []


def test_http_401_asks_to_reconnect_too(connector, account, fake):
    fake.fail(401, code=190, message="Error validating access token", subcode=460)

    error = refusal(connector, account)
    assert error.reconnect and "password was changed" in str(error)


def test_a_user_token_lacks_the_page_permission(connector, account, fake):
    account.credential.access_token = fake.user_token
    account.credential.save()

    error = refusal(connector, account)
    assert error.reconnect and "pages_manage_posts" in str(error)


def test_http_429_honours_retry_after(connector, account, fake):
    fake.fail(429, retry_after=7)

    error = refusal(connector, account)
    assert error.retry_after == 7 and not error.permanent and not error.reconnect
    assert "rate limit" in str(error) and "7 s" in str(error)


@pytest.mark.parametrize("code", [4, 17, 32, 613])
def test_graph_rate_limits_wait_as_long_as_facebook_estimates(connector, account, fake, code):
    fake.fail(400, code=code, minutes=3)

    error = refusal(connector, account)
    assert error.retry_after == 180 and not error.permanent
    assert f"code {code}" in str(error)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable(connector, account, fake, status):
    fake.fail(status)

    error = refusal(connector, account)
    assert not error.permanent and error.retry_after is None
    assert "temporary problem" in str(error)


def test_a_proxy_error_without_graph_json_is_retryable(connector, account, fake):
    from tests.fakes.base import Reply

    fake.error = lambda status, request=None, **details: Reply(status, b"<html>Bad Gateway</html>")
    fake.fail(502)

    error = refusal(connector, account)
    assert not error.permanent and "HTTP 502" in str(error)


def test_a_duplicate_is_refused_permanently_in_plain_words(connector, account, fake):
    connector.publish(account, released(account), "key-1")

    error = refusal(connector, account)
    assert error.permanent and not error.reconnect
    assert "duplicate" in str(error) and "same text" in str(error)
    assert len(fake.published) == 1


def test_other_refusals_are_permanent_with_facebook_words(connector, account, fake):
    fake.fail(400, code=368, message="The action attempted has been deemed abusive")

    error = refusal(connector, account)
    assert error.permanent and "community standards" in str(error)


def test_a_slow_answer_times_out_and_find_delivery_finds_the_post_it_made(
    connector, account, fake, settings, image
):
    path, sha256, _ = image
    content = released(account, image_path=path, image_sha256=sha256)
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "HTTP_TIMEOUT_SECONDS": 0.5}
    fake.stall(1.5, on="POST")

    with pytest.raises(DeliveryError, match="did not answer within 0.5 s") as caught:
        connector.publish(account, content, "key-1")
    assert not caught.value.permanent
    assert fake.wait_idle(timeout=5)
    [post] = fake.published  # Facebook published it after the client gave up

    found = connector.find_delivery(account, "key-1", content)
    assert found is not None and found.external_id == post.id
    search = fake.received[-1]
    assert (search.method, search.path) == ("GET", f"/v23.0/{PAGE_ID}/feed")
    assert search.query == {"fields": ["id,message,created_time"], "limit": ["10"]}
    assert connector.find_delivery(account, "key-2", released(account, text="Autre")) is None


def test_find_delivery_cannot_tell_without_permission(connector, account, fake):
    fake.fail(403, code=10, message="(#10) Requires pages_read_engagement permission")

    assert connector.find_delivery(account, "key-1", released(account)) is None


def test_the_page_id_may_come_from_the_credential(connector, account, fake):
    account.settings = {**account.settings, "page_id": ""}

    connector.publish(account, released(account), "key-1")
    assert len(fake.published) == 1


def test_without_a_credential_nothing_is_sent(connector, account, fake):
    account.credential.delete()
    account = SocialAccount.objects.get(pk=account.pk)

    error = refusal(connector, account)
    assert error.reconnect and "connect this account first" in str(error)
    health = connector.health(account)
    assert not health.ok and health.reconnect
    assert fake.received == []


def test_clean_settings(connector):
    assert connector.clean_settings({"page_id": PAGE_ID}) == {
        "page_id": PAGE_ID,
        "graph_version": "v23.0",
    }
    assert connector.clean_settings({"page_id": f" {PAGE_ID} ", "graph_version": "v19.0"}) == {
        "page_id": PAGE_ID,
        "graph_version": "v19.0",
    }
    with pytest.raises(ValidationError, match="numeric id of the Facebook Page"):
        connector.clean_settings({"page_id": "https://facebook.com/agencelyon"})
    with pytest.raises(ValidationError, match="Graph API version"):
        connector.clean_settings({"page_id": PAGE_ID, "graph_version": "19"})


def test_end_to_end_alice_drafts_rita_approves_facebook_publishes(
    world, account, fake, django_capture_on_commit_callbacks, client
):
    post = through_review(world, django_capture_on_commit_callbacks, [account], TEXT, LINK)
    assert post.state == State.PUBLISHED
    [sent] = fake.published
    assert (sent.message, sent.link) == (TEXT, LINK)
    publication = Publication.objects.get(post=post)
    assert publication.state == Publication.State.DELIVERED
    assert publication.external_id == sent.id
    assert publication.external_url.startswith(f"https://www.facebook.com/{PAGE_ID}/posts/")

    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert f'href="{publication.external_url}"' in page and sent.id in page
