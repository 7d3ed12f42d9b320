"""What the connector tests share: an account connected to a fake network, content, an image."""

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from approvals.connectors import DeliveryError, ReleasedContent
from approvals.models import AccountCredential, SocialAccount


def png_bytes():
    """A valid 1x1 PNG, made here rather than read from a file."""

    def chunk(kind, data):
        crc = struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x00"))
        + chunk(b"IEND", b"")
    )


def connected_account(*, team, network, name, settings, token, external_account_id="", **extra):
    """A validated account whose settings the connector cleaned, with an encrypted token."""
    account = SocialAccount(
        team=team, network=network, name=name, settings=settings, validated=True, **extra
    )
    account.full_clean()
    account.save()
    credential = AccountCredential(account=account, external_account_id=external_account_id)
    credential.access_token = token
    credential.save()
    return SocialAccount.objects.get(pk=account.pk)


def released(account, text, link, image_path="", image_sha256=None):
    """Content as the release gate hands it over (connector tests call publish directly): the
    image's approved hash is the file's own unless a test says otherwise."""
    if image_sha256 is None:
        image_sha256 = (
            hashlib.sha256(Path(image_path).read_bytes()).hexdigest() if image_path else ""
        )
    return ReleasedContent(
        text=text,
        link=link,
        account_ids=(account.pk,),
        content_hash="",
        tag_ids=(),
        post_id=1,
        revision_number=1,
        image_path=image_path,
        image_sha256=image_sha256,
    )


def route_to(settings, network, server):
    """Send the network's API calls to the fake server (on loopback: private addresses allowed)."""
    settings.REVIEWFLOW = {
        **settings.REVIEWFLOW,
        "ALLOW_PRIVATE_NETWORKS": True,
        "API_BASE_URLS": {**settings.REVIEWFLOW["API_BASE_URLS"], network: server.url},
    }


def assert_refuses_an_image_not_approved(connector, account, fake, tmp_path):
    """The connector sends nothing when the image file is not the one approved (its hash)."""
    path = tmp_path / "affiche.png"
    path.write_bytes(png_bytes())
    content = released(account, "Portes ouvertes", "", str(path), image_sha256="0" * 64)
    with pytest.raises(DeliveryError, match="not the approved image") as caught:
        connector.publish(account, content, "key-1")
    assert caught.value.permanent
    assert fake.received == []
