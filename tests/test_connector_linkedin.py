"""The LinkedIn connector against a local server answering as LinkedIn's Posts API does."""

import hashlib

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from approvals.connectors import DeliveryError, get_connector
from approvals.connectors.linkedin import little_text
from approvals.models import AccountCredential, Publication, SocialAccount
from approvals.models.posts import State
from tests.fakes.kit import (
    assert_refuses_an_image_not_approved,
    connected_account,
    png_bytes,
    route_to,
)
from tests.fakes.kit import released as kit_released
from tests.fakes.linkedin import ORGANIZATION, FakeLinkedIn, render_little

from .conftest import through_review

pytestmark = pytest.mark.django_db

# Reserved little-format characters everywhere: LinkedIn would cut an unescaped text at '('.
TEXT = "Portes ouvertes samedi (Lyon 2e) : taux < 3 %, sans frais* — #Lyon @agence [info] ~ok_"
LINK = "https://example.com/agence/lyon?x=1&y=2"


@pytest.fixture
def fake(settings):
    with FakeLinkedIn() as server:
        route_to(settings, "linkedin", server)
        yield server


@pytest.fixture
def account(world, fake):
    return connected_account(
        team=world.lyon,
        network="linkedin",
        name="Agence Lyon on LinkedIn",
        settings={"author": ORGANIZATION},
        token=fake.token,
        external_account_id=fake.member,
    )


@pytest.fixture
def connector():
    return get_connector("linkedin")


def released(account, text=TEXT, link=LINK, image_path="", image_sha256=None):
    return kit_released(account, text, link, image_path, image_sha256)


def test_text_and_link_arrive_verbatim_as_an_article(connector, account, fake):
    delivered = connector.publish(account, released(account), "key-1")

    [post] = fake.published
    assert delivered.external_id == post.urn and post.urn.startswith("urn:li:share:")
    assert delivered.url == f"https://www.linkedin.com/feed/update/{post.urn}/"
    assert post.author == ORGANIZATION
    assert post.text == TEXT  # every reserved character escaped: nothing cut off
    assert post.content == {"article": {"source": LINK, "title": "example.com"}}
    assert post.body["visibility"] == "PUBLIC"
    assert post.body["lifecycleState"] == "PUBLISHED"
    assert post.body["distribution"]["feedDistribution"] == "MAIN_FEED"
    [call] = fake.received
    assert call.bearer == fake.token
    assert call.headers["linkedin-version"] == account.settings["version"]
    assert call.headers["x-restli-protocol-version"] == "2.0.0"


def test_unescaped_text_would_be_cut_which_is_why_it_is_escaped():
    assert render_little(TEXT) == "Portes ouvertes samedi "
    assert render_little(little_text(TEXT)) == TEXT
    assert little_text("#Lyon C# a\\b") == "#Lyon C\\# a\\\\b"


def test_a_member_author_comes_from_the_credential_when_settings_name_none(
    connector, account, fake
):
    account.settings = {**account.settings, "author": ""}
    connector.publish(account, released(account, link=""), "key-1")

    [post] = fake.published
    assert post.author == fake.member
    assert post.content == {}


def test_an_image_is_uploaded_then_posted_with_the_link_in_the_text(
    connector, account, fake, tmp_path
):
    data = png_bytes()
    path = tmp_path / "affiche.png"
    path.write_bytes(data)
    content = released(account, image_path=str(path), image_sha256=hashlib.sha256(data).hexdigest())

    delivered = connector.publish(account, content, "key-1")

    [image] = fake.images.values()
    [post] = fake.published
    assert image.owner == ORGANIZATION and image.data == data
    assert image.headers["authorization"] == f"Bearer {fake.token}"
    assert post.content == {"media": {"id": image.urn}}
    assert post.image == data
    assert post.text == f"{TEXT}\n{LINK}"
    assert delivered.external_id == post.urn
    assert [f"{r.method} {r.path}" for r in fake.received] == [
        "POST /rest/images",
        f"PUT {image.upload_path}",
        "POST /rest/posts",
    ]


def test_an_image_that_is_not_the_approved_one_is_not_sent(connector, account, fake, tmp_path):
    assert_refuses_an_image_not_approved(connector, account, fake, tmp_path)


def test_an_upload_address_outside_linkedin_is_refused(connector, account, fake, tmp_path):
    data = png_bytes()
    path = tmp_path / "affiche.png"
    path.write_bytes(data)
    fake.upload_base = "http://127.0.0.2:9"  # the token must not go there
    content = released(account, image_path=str(path), image_sha256=hashlib.sha256(data).hexdigest())

    with pytest.raises(DeliveryError, match="outside LinkedIn") as caught:
        connector.publish(account, content, "key-1")
    assert caught.value.permanent
    assert fake.published == []


def test_retract_deletes_the_post_and_is_idempotent(connector, account, fake):
    delivered = connector.publish(account, released(account), "key-1")

    connector.retract(account, delivered.external_id)
    connector.retract(account, delivered.external_id)  # already deleted: fine

    assert fake.published == [] and fake.posts[delivered.external_id].deleted
    delete = fake.received[-1]
    assert delete.method == "DELETE"
    assert delete.path == "/rest/posts/" + delivered.external_id.replace(":", "%3A")
    with pytest.raises(DeliveryError, match="not a LinkedIn post URN"):
        connector.retract(account, "12345")


def test_health_ok_and_expired(connector, account, fake):
    health = connector.health(account)
    assert health.ok and "Alice Martin" in health.detail

    fake.expire_token()
    health = connector.health(account)
    assert not health.ok and health.reconnect
    assert "reconnect" in health.detail and "expired" in health.detail


def test_health_without_a_credential_says_to_connect(connector, account):
    account.credential.delete()
    account = SocialAccount.objects.get(pk=account.pk)

    health = connector.health(account)
    assert not health.ok and health.reconnect
    assert "connect this account first" in health.detail


def test_rate_limit_honours_retry_after(connector, account, fake):
    fake.fail(429, on="POST /rest/posts", retry_after=7)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "key-1")
    error = caught.value
    assert error.retry_after == 7 and not error.permanent and not error.reconnect
    assert "rate limit" in str(error) and "7 s" in str(error)
    assert fake.published == []


def test_expired_token_asks_to_reconnect(connector, account, fake):
    fake.expire_token()

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "key-1")
    assert caught.value.reconnect and caught.value.permanent
    assert "expired or revoked" in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retryable(connector, account, fake, status):
    fake.fail(status)

    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "key-1")
    assert not caught.value.permanent and caught.value.retry_after is None
    assert f"HTTP {status}" in str(caught.value)


def test_a_slow_answer_times_out_and_find_delivery_finds_the_post_it_made(
    connector, account, fake, settings
):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "HTTP_TIMEOUT_SECONDS": 0.5}
    fake.stall(1.5, on="POST /rest/posts")

    with pytest.raises(DeliveryError, match="did not answer within 0.5 s") as caught:
        connector.publish(account, released(account), "key-1")
    assert not caught.value.permanent
    assert fake.wait_idle(timeout=5)
    [post] = fake.published  # LinkedIn published it after the client gave up

    found = connector.find_delivery(account, "key-1", released(account))
    assert found is not None and found.external_id == post.urn
    assert found.url == f"https://www.linkedin.com/feed/update/{post.urn}/"
    search = fake.received[-1]
    assert search.query == {
        "q": ["author"],
        "author": [ORGANIZATION],
        "count": ["10"],
        "sortBy": ["LAST_MODIFIED"],
    }

    # Sending again instead would be refused as a duplicate, permanently and in plain words.
    with pytest.raises(DeliveryError) as caught:
        connector.publish(account, released(account), "key-1")
    assert caught.value.permanent and not caught.value.reconnect
    assert "duplicate of an earlier post" in str(caught.value) and post.urn in str(caught.value)
    assert len(fake.published) == 1


def test_find_delivery_matches_exact_content_only(connector, account, fake):
    connector.publish(account, released(account), "key-1")

    assert connector.find_delivery(account, "key-2", released(account, text=TEXT + "!")) is None
    assert connector.find_delivery(account, "key-2", released(account, link="")) is None
    other_link = released(account, link="https://example.com/other")
    assert connector.find_delivery(account, "key-2", other_link) is None


def test_find_delivery_cannot_tell_without_read_permission(connector, account, fake):
    fake.organizations = set()  # the member is no longer an administrator of the page

    assert connector.find_delivery(account, "key-1", released(account)) is None
    with pytest.raises(DeliveryError, match="administrator") as caught:
        connector.publish(account, released(account), "key-1")
    assert caught.value.permanent


def test_a_sunset_api_version_is_said_plainly(connector, account, fake):
    account.settings = {**account.settings, "version": "202301"}

    with pytest.raises(DeliveryError, match="no longer serves API version 202301") as caught:
        connector.publish(account, released(account), "key-1")
    assert caught.value.permanent


def test_without_a_credential_nothing_is_sent(connector, account, fake):
    account.credential.delete()
    account = SocialAccount.objects.get(pk=account.pk)

    with pytest.raises(DeliveryError, match="connect this account first") as caught:
        connector.publish(account, released(account), "key-1")
    assert caught.value.reconnect
    assert fake.received == []


def test_clean_settings(connector):
    assert connector.clean_settings({"author": ORGANIZATION}) == {
        "author": ORGANIZATION,
        "version": "202606",
    }
    assert connector.clean_settings({"author": " urn:li:person:aB-9_x ", "version": "202512"}) == {
        "author": "urn:li:person:aB-9_x",
        "version": "202512",
    }
    with pytest.raises(ValidationError, match="urn:li:organization:<id>"):
        connector.clean_settings({"author": "https://www.linkedin.com/company/agence-lyon"})
    with pytest.raises(ValidationError, match="YYYYMM"):
        connector.clean_settings({"author": ORGANIZATION, "version": "2025-06"})
    with pytest.raises(ValidationError, match="YYYYMM"):
        connector.clean_settings({"version": "202513"})


def test_the_account_form_reports_bad_settings(world):
    account = SocialAccount(
        team=world.lyon, network="linkedin", name="Bad", settings={"author": "lyon"}
    )
    with pytest.raises(ValidationError) as caught:
        account.full_clean()
    assert "settings" in caught.value.message_dict


def test_end_to_end_alice_drafts_rita_approves_linkedin_publishes(
    world, account, fake, django_capture_on_commit_callbacks, client
):
    post = through_review(world, django_capture_on_commit_callbacks, [account], TEXT, LINK)
    assert post.state == State.PUBLISHED
    [sent] = fake.published
    assert sent.text == TEXT and sent.content["article"]["source"] == LINK
    publication = Publication.objects.get(post=post)
    assert publication.state == Publication.State.DELIVERED
    assert publication.external_id == sent.urn
    assert publication.external_url == f"https://www.linkedin.com/feed/update/{sent.urn}/"

    client.force_login(world.alice)
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert f'href="{publication.external_url}"' in page and sent.urn in page


def test_end_to_end_an_expired_token_fails_the_post_and_asks_to_reconnect(
    world, account, fake, django_capture_on_commit_callbacks
):
    fake.expire_token()
    post = through_review(world, django_capture_on_commit_callbacks, [account], TEXT, LINK)
    assert post.state == State.FAILED
    publication = Publication.objects.get(post=post)
    assert publication.state == Publication.State.FAILED
    assert "reconnect" in publication.error and "expired" in publication.error
    assert fake.published == []
    credential = AccountCredential.objects.get(account=account)
    assert credential.status == AccountCredential.Status.RECONNECT
