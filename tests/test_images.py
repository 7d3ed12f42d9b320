"""One image per post: checked by its bytes, part of the approved content hash, served privately."""

import base64
import hashlib
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from approvals import workflow
from approvals.connectors import ReleasedContent
from approvals.models import Post

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]

# A 1x1 transparent PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def upload(data=PNG, name="photo.png"):
    return SimpleUploadedFile(name, data, content_type="image/png")


def test_an_image_is_part_of_the_approved_content(world):
    post = workflow.create_post(
        world.alice, text="Salon de l'épargne", account_ids=[world.lyon_sandbox.pk], image=upload()
    )
    revision = post.current_revision
    assert revision.image_sha256 and revision.image.name.endswith(".png")
    content = ReleasedContent.of(revision)
    assert content.hash_matches() and content.image_bytes() == PNG
    # The same text without the image is another content.
    edited = workflow.edit_post(
        post.pk,
        world.alice,
        text="Salon de l'épargne",
        account_ids=[world.lyon_sandbox.pk],
        image=None,
    )
    assert edited.current_revision.number == 2
    assert edited.current_revision.content_hash != revision.content_hash
    assert not edited.current_revision.image


def test_editing_text_keeps_the_image(world):
    post = workflow.create_post(
        world.alice, text="Version 1", account_ids=[world.lyon_sandbox.pk], image=upload()
    )
    edited = workflow.edit_post(
        post.pk, world.alice, text="Version 2", account_ids=[world.lyon_sandbox.pk]
    )
    assert edited.current_revision.image.name == post.current_revision.image.name
    assert edited.current_revision.image_sha256 == post.current_revision.image_sha256


def test_tampered_image_file_no_longer_matches(world):
    post = workflow.create_post(
        world.alice, text="Image", account_ids=[world.lyon_sandbox.pk], image=upload()
    )
    content = ReleasedContent.of(post.current_revision)
    with open(content.image_path, "ab") as image:
        image.write(b"tampered")
    assert not content.hash_matches()


@pytest.mark.parametrize(
    "data, message",
    [(b"<svg onload=alert(1)>", "PNG, JPEG, GIF or WebP"), (b"MZ\x90\x00", "PNG, JPEG")],
)
def test_not_an_image_is_refused_next_to_the_field(client, world, data, message):
    client.force_login(world.alice)
    response = client.post(
        reverse("post_create"),
        {"text": "Avec image", "accounts": [world.lyon_sandbox.pk], "image": upload(data, "x.png")},
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Post.objects.exists()


def test_too_large_image_is_refused(client, world, settings):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "MAX_IMAGE_BYTES": 50}
    client.force_login(world.alice)
    response = client.post(
        reverse("post_create"),
        {"text": "Grande image", "accounts": [world.lyon_sandbox.pk], "image": upload(PNG * 2)},
    )
    assert response.status_code == 400 and "maximum" in response.content.decode()


def test_image_is_served_only_to_people_who_may_see_the_post(client, world):
    client.force_login(world.alice)
    response = client.post(
        reverse("post_create"),
        {"text": "Avec image", "accounts": [world.lyon_sandbox.pk], "image": upload()},
    )
    post = Post.objects.get()
    assert response.status_code == 302
    url = reverse("revision_image", args=[post.pk, 1])
    page = client.get(reverse("post_detail", args=[post.pk])).content.decode()
    assert url in page
    image = client.get(url)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content) == PNG
    client.force_login(world.tom)  # another team
    assert client.get(url).status_code == 404
    client.logout()
    assert client.get(url).status_code == 302


# --- An image chosen in a refused try is kept -----------------------------------------------------

BLOCKED_TEXT = "Rendement garanti de 8 % !"  # the default lexicon blocks a promise of return
KEPT_TOKEN = re.compile(r'name="kept_image" value="([^"]+)"')


def refused_try(client, world, **fields):
    """alice's New post sent with an image and something refused; the kept image's token."""
    client.force_login(world.alice)
    data = {"text": BLOCKED_TEXT, "accounts": [world.lyon_sandbox.pk], "image": upload()}
    response = client.post(reverse("post_create"), {**data, "submit": "1", **fields})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Kept from your last try: photo.png" in page
    return KEPT_TOKEN.search(page).group(1)


@pytest.mark.parametrize(
    "refusal", [{}, {"text": "Portes ouvertes", "publish_at": "2020-01-01T10:00"}]
)
def test_an_image_chosen_before_a_refusal_goes_with_the_next_try(client, world, refusal):
    """A blocking finding, or a field the form refuses: the advisor fixes it without choosing
    the image again, and the post carries it."""
    token = refused_try(client, world, **refusal)
    assert not Post.objects.exists()
    response = client.post(
        reverse("post_create"),
        {
            "text": "Portes ouvertes samedi.",
            "accounts": [world.lyon_sandbox.pk],
            "kept_image": token,
            "submit": "1",
        },
    )
    assert response.status_code == 302
    revision = Post.objects.get().current_revision
    assert revision.image_sha256 == hashlib.sha256(PNG).hexdigest()
    assert ReleasedContent.of(revision).hash_matches()


def test_the_kept_image_is_shown_to_its_author_only(client, world):
    token = refused_try(client, world)
    url = reverse("kept_image", args=[token])
    image = client.get(url)
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert b"".join(image.streaming_content) == PNG
    client.force_login(world.bruno)  # another advisor cannot see it, nor post it as theirs
    assert client.get(url).status_code == 404
    response = client.post(
        reverse("post_create"),
        {"text": "Portes ouvertes", "accounts": [world.paris_sandbox.pk], "kept_image": token},
    )
    assert response.status_code == 400
    assert "The image you chose before is no longer available" in response.content.decode()
    assert not Post.objects.exists()


@pytest.mark.parametrize("token", ["forged", "a:b:c", ""])
def test_a_forged_kept_image_is_refused_with_a_message(client, world, token):
    client.force_login(world.alice)
    response = client.post(
        reverse("post_create"),
        {"text": "Portes ouvertes", "accounts": [world.lyon_sandbox.pk], "kept_image": token},
    )
    if token:
        assert response.status_code == 400
        assert "no longer available: choose it again" in response.content.decode()
        assert not Post.objects.exists()
        assert client.get(f"/posts/kept-image/{token}/").status_code == 404
    else:  # no kept image: a post without one
        assert response.status_code == 302 and not Post.objects.get().current_revision.image


def test_removing_the_kept_image_saves_the_post_without_it(client, world):
    token = refused_try(client, world)
    response = client.post(
        reverse("post_create"),
        {
            "text": "Portes ouvertes",
            "accounts": [world.lyon_sandbox.pk],
            "kept_image": token,
            "remove_image": "on",
        },
    )
    assert response.status_code == 302 and not Post.objects.get().current_revision.image


def test_an_edit_refused_keeps_the_new_image_over_the_current_one(client, world):
    post = workflow.create_post(
        world.alice, text="Version 1", account_ids=[world.lyon_sandbox.pk], image=upload()
    )
    other = PNG[:-12] + b"\x00" * 12  # another file with a PNG's signature
    client.force_login(world.alice)
    edit = reverse("post_edit", args=[post.pk])
    response = client.post(
        edit,
        {
            "text": BLOCKED_TEXT,
            "accounts": [world.lyon_sandbox.pk],
            "image": upload(other, "new.png"),
            "submit": "1",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Kept from your last try: new.png" in page
    assert reverse("revision_image", args=[post.pk, 1]) not in page  # the new one is shown
    response = client.post(
        edit,
        {
            "text": "Version 2",
            "accounts": [world.lyon_sandbox.pk],
            "kept_image": KEPT_TOKEN.search(page).group(1),
        },
    )
    assert response.status_code == 302
    revision = Post.objects.get().current_revision
    assert revision.number == 2 and revision.image_sha256 == hashlib.sha256(other).hexdigest()
