"""Mastodon: the REST API of the account's own instance, with an OAuth 2.0 bearer token.

Settings: {"instance": "https://mastodon.social", "visibility": "public|unlisted|private"}. The
instance is the base URL of every call, checked against SSRF when entered and at every call.

- POST /api/v2/media, multipart `file` -> 200 MediaAttachment, or 202 with "url": null while the
  instance processes it; then GET /api/v1/media/:id answers 206 until it is ready (200).
- POST /api/v1/statuses, form fields status, visibility, media_ids[], header Idempotency-Key:
  the publication's key. Mastodon keeps the key for an hour and answers a repeat with the
  status it already made, so a retry after a crash or a timeout never posts twice.
- DELETE /api/v1/statuses/:id; GET /api/v1/accounts/verify_credentials (health).

Errors are {"error": "..."}: 401 -> reconnect; 422 "Validation failed: ..." -> permanent; 429 ->
wait until X-RateLimit-Reset (an ISO 8601 time) or Retry-After; 5xx and timeouts -> retryable.

find_delivery searches the account's latest statuses for this exact text (their HTML turned
back into text) and the same number of images. When it finds nothing, the sweeper re-sends with
the same Idempotency-Key, which is safe on its own within the hour Mastodon keeps keys; the
search is what covers a delivery found stalled later than that.
"""

import html
import re
import time
import unicodedata
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import quote, urlsplit

from django.core.exceptions import ValidationError
from django.utils import timezone

from approvals.media import mime_type

from .base import (
    Connector,
    Delivered,
    DeliveryError,
    Health,
    access_token,
    external_account_id,
)
from .http import error_for, request, retry_after_seconds, validate_destination

NETWORK = "Mastodon"
VISIBILITIES = ("public", "unlisted", "private")
ANY_STATUS = range(100, 600)  # _call sorts the answers itself
RECENT = 20  # statuses looked at by find_delivery
MEDIA_POLLS = 6  # GET /api/v1/media/:id tries while an image is processed
MEDIA_POLL_SECONDS = 0.5  # first wait between them; doubles each time
URL_MAX_LENGTH = 2000  # Publication.external_url
# As the default NetworkRule for Mastodon (migration 0007): graphemes, URLs as 23.
RULE = SimpleNamespace(network="mastodon", weighted=False, url_length=23)


def as_text(content_html):
    """A status's HTML as its plain text: paragraphs and <br /> as line breaks, tags dropped."""
    text = re.sub(r"<br\s*/?>", "\n", content_html or "", flags=re.IGNORECASE)
    text = re.sub(r"</p>\s*<p>", "\n\n", text, flags=re.IGNORECASE)
    return html.unescape(re.sub(r"<[^>]*>", "", text))


def _same_text(a, b):
    def norm(text):
        return " ".join(unicodedata.normalize("NFC", text).split())

    return norm(a) == norm(b)


class MastodonConnector(Connector):
    network = "mastodon"
    label = "Mastodon"
    max_length = 500  # the default of a Mastodon instance; some allow more

    def clean_settings(self, config):
        instance = str(config.get("instance") or "").strip().rstrip("/")
        try:
            parts = urlsplit(instance)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username
            or parts.password
            or parts.path
            or parts.query
            or parts.fragment
        ):
            raise ValidationError(
                "settings.instance must be the http(s) address of the Mastodon server, "
                "such as https://mastodon.social (no path)."
            )
        validate_destination(instance, "settings.instance")  # SSRF: no internal instance
        visibility = str(config.get("visibility") or "public").strip().lower()
        if visibility not in VISIBILITIES:
            raise ValidationError(
                f"settings.visibility must be one of {', '.join(VISIBILITIES)}, not {visibility!r}."
            )
        return {**config, "instance": instance, "visibility": visibility}

    def count(self, text, link):
        from approvals.policy.counting import count

        return count(text, link, RULE)

    # Publishing
    def publish(self, account, content, idempotency_key):
        token = access_token(account)
        fields = [
            ("status", content.text_with_link()),
            ("visibility", (account.settings or {}).get("visibility") or "public"),
        ]
        if content.image_path:
            fields.append(("media_ids[]", self._upload(account, token, content)))
        response = self._call(
            account,
            token,
            "POST",
            "/api/v1/statuses",
            data=fields,
            headers={"Idempotency-Key": idempotency_key},
            ok=(200,),
        )
        return self._delivered(_json(response))

    def _upload(self, account, token, content):
        data = content.image_bytes()
        kind = mime_type(data)
        response = self._call(
            account,
            token,
            "POST",
            "/api/v2/media",
            files={"file": (f"image.{kind.rsplit('/', 1)[-1]}", data, kind)},
            ok=(200, 202),
        )
        media_id = str(_json(response).get("id") or "")
        if not media_id:
            raise DeliveryError(f"{NETWORK} accepted the image but sent back no id")
        if response.status_code == 202:  # processed in the background: wait until it is ready
            path = f"/api/v1/media/{quote(media_id, safe='')}"
            for attempt in range(MEDIA_POLLS):
                if attempt:
                    time.sleep(MEDIA_POLL_SECONDS * 2 ** (attempt - 1))
                if self._call(account, token, "GET", path, ok=(200, 206)).status_code == 200:
                    break
            else:
                raise DeliveryError(f"{NETWORK} is still processing the image; trying later")
        return media_id

    def retract(self, account, external_id):
        token = access_token(account)
        path = f"/api/v1/statuses/{quote(str(external_id), safe='')}"
        self._call(account, token, "DELETE", path, ok=(200, 404))  # 404: already gone

    def find_delivery(self, account, idempotency_key, content):
        """The account's status with exactly this text among its latest ones, or None."""
        token = access_token(account)
        account_id = external_account_id(account) or str(self._me(account, token)["id"])
        response = self._call(
            account,
            token,
            "GET",
            f"/api/v1/accounts/{quote(account_id, safe='')}/statuses",
            params={"limit": RECENT, "exclude_replies": "true", "exclude_reblogs": "true"},
            ok=(200,),
        )
        try:
            statuses = response.json()
        except ValueError:
            return None
        wanted = content.text_with_link()
        for status in statuses if isinstance(statuses, list) else []:
            if not isinstance(status, dict) or not status.get("id"):
                continue
            images = len(status.get("media_attachments") or [])
            if _same_text(as_text(status.get("content")), wanted) and images == (
                1 if content.image_path else 0
            ):
                return self._delivered(status)
        return None

    def health(self, account):
        try:
            token = access_token(account)
            me = self._me(account, token)
        except DeliveryError as error:
            return Health(ok=False, detail=str(error), reconnect=error.reconnect)
        host = urlsplit(account.settings.get("instance", "")).hostname or ""
        acct = me.get("acct") or me.get("username")
        known = external_account_id(account)
        if known and known != str(me["id"]):
            return Health(
                ok=False,
                detail=f"the token is for @{acct} (id {me['id']}), not the account id {known}: "
                "reconnect the account",
                reconnect=True,
            )
        return Health(ok=True, detail=f"connected as @{acct}@{host}" if acct else "connected")

    # Calls
    def _me(self, account, token):
        path = "/api/v1/accounts/verify_credentials"
        me = _json(self._call(account, token, "GET", path, ok=(200,)))
        if not me.get("id"):
            raise DeliveryError(f"{NETWORK} did not say which account the token belongs to")
        return me

    @staticmethod
    def _delivered(status):
        status_id = str(status.get("id") or "")
        if not status_id:
            raise DeliveryError(f"{NETWORK} accepted the status but sent back no id")
        url = str(status.get("url") or status.get("uri") or "")
        if urlsplit(url).scheme not in ("http", "https") or len(url) > URL_MAX_LENGTH:
            url = ""  # never render a javascript: link an instance sent back
        return Delivered(external_id=status_id[:200], url=url)

    def _call(self, account, token, method, path, *, ok, headers=None, **kwargs):
        instance = (account.settings or {}).get("instance", "").rstrip("/")
        if not instance:
            raise DeliveryError(
                f"{NETWORK}: the account has no instance address in its settings", permanent=True
            )
        response = request(
            method,
            instance + path,
            network=NETWORK,
            expected=ANY_STATUS,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
            **kwargs,
        )
        status = response.status_code
        if status in ok:
            return response
        if status == 429:
            raise rate_limited(response)
        raise error_for(response, NETWORK)


def rate_limited(response):
    """Mastodon says when its window resets in X-RateLimit-Reset, an ISO 8601 time."""
    wait = retry_after_seconds(response)
    reset = response.headers.get("X-RateLimit-Reset", "").strip()
    if wait is None and reset:
        try:
            moment = datetime.fromisoformat(reset.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            wait = max(0, round((moment - timezone.now()).total_seconds()))
    when = f"; it asks to wait {wait} s" if wait is not None else ""
    return DeliveryError(f"{NETWORK} rate limit reached{when}", retry_after=wait)


def _json(response):
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
