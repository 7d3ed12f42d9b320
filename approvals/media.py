"""The one image a post may carry: checked by its bytes, stored under its hash."""

import hashlib

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

# Magic numbers of the formats every network accepts; the extension is never trusted.
FORMATS = {
    b"\x89PNG\r\n\x1a\n": ("png", "image/png"),
    b"\xff\xd8\xff": ("jpg", "image/jpeg"),
    b"GIF87a": ("gif", "image/gif"),
    b"GIF89a": ("gif", "image/gif"),
}


def image_format(head):
    for magic, found in FORMATS.items():
        if head.startswith(magic):
            return found
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ("webp", "image/webp")
    return None


def check_image(upload):
    """The sha256 of an acceptable image upload, or ValueError saying what is wrong."""
    limit = settings.REVIEWFLOW["MAX_IMAGE_BYTES"]
    if upload.size > limit:
        raise ValueError(
            f"The image is {upload.size // 1024} KB; the maximum is {limit // 1024} KB."
        )
    upload.seek(0)
    if image_format(upload.read(16)) is None:
        raise ValueError("Attach a PNG, JPEG, GIF or WebP image.")
    upload.seek(0)
    digest = hashlib.file_digest(upload, "sha256").hexdigest()
    upload.seek(0)
    return digest


def store_image(upload, sha256):
    upload.seek(0)
    data = upload.read()
    extension, _ = image_format(data[:16])
    name = f"revisions/{sha256[:2]}/{sha256}.{extension}"
    if not default_storage.exists(name):
        name = default_storage.save(name, ContentFile(data))
    return name


def mime_type(data):
    found = image_format(data[:16])
    return found[1] if found else "application/octet-stream"


def content_type(path):
    with open(path, "rb") as image:
        found = image_format(image.read(16))
    return found[1] if found else "application/octet-stream"
