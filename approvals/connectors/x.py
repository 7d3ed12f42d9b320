"""X (formerly Twitter): API v2 with an OAuth 2.0 user-context bearer token (it lasts two
hours: approvals.health.fresh_access_token refreshes it before use when it can).

Calls (base URL: REVIEWFLOW["API_BASE_URLS"]["x"], https://api.x.com):

- POST /2/media/upload, multipart/form-data: `media` (the file), `media_category=tweet_image`,
  `media_type` -> {"data": {"id", "media_key", ...}}. The v2 one-shot upload, chosen over
  v1.1's upload.twitter.com/1.1/media/upload.json (media_id_string): same token, same host.
- POST /2/tweets, JSON {"text", "media": {"media_ids": [...]}} -> 201 {"data": {"id", "text"}}.
  X has no link field: the link is appended to the text after a space, as the length checks
  count it (approvals/policy/counting.py).
- DELETE /2/tweets/:id -> {"data": {"deleted": true}}.
- GET /2/users/me -> {"data": {"id", "username"}}: the health check, and the user id for
- GET /2/users/:id/tweets?max_results=10&tweet.fields=entities: find_delivery.

Errors: 401 -> reconnect; 429 -> wait until x-rate-limit-reset (epoch seconds) or Retry-After;
5xx and timeouts -> retryable; 403 "duplicate content" -> permanent, in plain words.

X takes no idempotency key. Its refusal of duplicate content is what stops a doubled post: when
a retry is refused as a duplicate, the connector looks for the post among the account's latest
ones and, found, reports that one as the delivery.
"""

import html
import re
import time
import unicodedata
from types import SimpleNamespace
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import ValidationError

from approvals.media import mime_type

from .base import (
    Connector,
    Delivered,
    DeliveryError,
    Health,
    access_token,
    external_account_id,
)
from .http import error_for, request, retry_after_seconds

NETWORK = "X"
USERNAME_RE = re.compile(r"[A-Za-z0-9_]{1,15}")
ANY_STATUS = range(100, 600)  # _call sorts the answers itself
RECENT = 10  # posts looked at by find_delivery (X accepts 5 to 100)
# As the default NetworkRule for X (migration 0007): twitter-text weights, URLs as 23.
RULE = SimpleNamespace(network="x", weighted=True, url_length=23)


def _same_text(a, b):
    def norm(text):
        return " ".join(unicodedata.normalize("NFC", text).split())

    return norm(a) == norm(b)


class XConnector(Connector):
    network = "x"
    label = "X (API v2)"
    max_length = 280

    def clean_settings(self, config):
        username = str(config.get("username") or "").strip().removeprefix("@")
        if username and not USERNAME_RE.fullmatch(username):
            raise ValidationError(
                "settings.username must be the X handle: 1 to 15 letters, digits or "
                "underscores (the @ is optional)."
            )
        return {**config, "username": username}

    def count(self, text, link):
        from approvals.policy.counting import count

        return count(text, link, RULE)

    # Publishing
    def publish(self, account, content, idempotency_key):
        token = access_token(account)
        body = {"text": content.text_with_link()}
        if content.image_path:
            body["media"] = {"media_ids": [self._upload(token, content)]}
        response = self._call(token, "POST", "/2/tweets", json=body, ok=(201, 200, 403))
        if response.status_code == 403:
            detail = _problem(response)
            if "duplicate" not in detail.lower():
                raise error_for(response, NETWORK)
            if found := self.find_delivery(account, idempotency_key, content):
                return found  # an earlier attempt of ours did publish it
            raise DeliveryError(
                f"{NETWORK} refused the post as duplicate content: an identical post is "
                "already on this account.",
                permanent=True,
            )
        post_id = str(_data(response).get("id") or "")
        if not post_id:
            raise DeliveryError(f"{NETWORK} accepted the post but sent back no id")
        return Delivered(external_id=post_id, url=self._post_url(account, post_id))

    def _upload(self, token, content):
        data = content.image_bytes()
        kind = mime_type(data)
        extension = kind.rsplit("/", 1)[-1]
        response = self._call(
            token,
            "POST",
            "/2/media/upload",
            files={"media": (f"image.{extension}", data, kind)},
            data={"media_category": "tweet_image", "media_type": kind},
            ok=(200, 201),
        )
        media_id = str(_data(response).get("id") or "")
        if not media_id:
            raise DeliveryError(f"{NETWORK} accepted the image but sent back no media id")
        return media_id

    def retract(self, account, external_id):
        token = access_token(account)
        path = f"/2/tweets/{quote(str(external_id), safe='')}"
        response = self._call(token, "DELETE", path, ok=(200, 404))
        if response.status_code == 404:
            return  # already gone: nothing left to take down
        if _data(response).get("deleted") is not True:
            raise DeliveryError(f"{NETWORK} did not confirm the deletion; try again")

    def find_delivery(self, account, idempotency_key, content):
        """The account's post with exactly this text among its latest ones, or None.

        X returns each URL as a t.co link (entities.urls gives the expanded one), a photo as
        one more t.co link, and &, < and > HTML-escaped: all undone before comparing.
        """
        token = access_token(account)
        user_id = self._user_id(account, token)
        response = self._call(
            token,
            "GET",
            f"/2/users/{quote(user_id, safe='')}/tweets",
            params={"max_results": RECENT, "tweet.fields": "entities", "exclude": "replies"},
            ok=(200,),
        )
        try:
            posts = response.json().get("data") or []
        except (ValueError, AttributeError):
            return None
        wanted = content.text_with_link()
        for post in posts if isinstance(posts, list) else []:
            if not isinstance(post, dict) or not post.get("id"):
                continue
            text, has_photo = _as_sent(post)
            if _same_text(text, wanted) and has_photo == bool(content.image_path):
                return Delivered(str(post["id"]), self._post_url(account, str(post["id"])))
        return None

    def health(self, account):
        try:
            token = access_token(account)
            user = _data(self._call(token, "GET", "/2/users/me", ok=(200,)))
        except DeliveryError as error:
            return Health(ok=False, detail=str(error), reconnect=error.reconnect)
        username = str(user.get("username") or "")
        known = external_account_id(account)
        if known and user.get("id") and known != str(user["id"]):
            return Health(
                ok=False,
                detail=f"the token is for @{username} (user id {user['id']}), not the user id "
                f"{known}: reconnect the account",
                reconnect=True,
            )
        expected = (account.settings or {}).get("username")
        if expected and username and username.lower() != expected.lower():
            return Health(
                ok=False,
                detail=f"the token is for @{username}, not @{expected}: reconnect the account",
                reconnect=True,
            )
        return Health(ok=True, detail=f"connected as @{username}" if username else "connected")

    # Calls
    def _user_id(self, account, token):
        if known := external_account_id(account):
            return known
        user_id = str(_data(self._call(token, "GET", "/2/users/me", ok=(200,))).get("id") or "")
        if not user_id:
            raise DeliveryError(f"{NETWORK} did not say which user the token belongs to")
        return user_id

    def _post_url(self, account, post_id):
        username = (account.settings or {}).get("username")
        if username:
            return f"https://x.com/{username}/status/{post_id}"
        return f"https://x.com/i/web/status/{post_id}"

    def _call(self, token, method, path, *, ok, **kwargs):
        base = settings.REVIEWFLOW["API_BASE_URLS"]["x"].rstrip("/")
        response = request(
            method,
            base + path,
            network=NETWORK,
            expected=ANY_STATUS,
            headers={"Authorization": f"Bearer {token}"},
            **kwargs,
        )
        status = response.status_code
        if status in ok:
            return response
        if status == 429:
            raise rate_limited(response)
        if 400 <= status < 500 and status not in (401, 408, 425):
            # X's problem objects put the useful words in errors[].message for a 400.
            raise DeliveryError(
                f"{NETWORK} refused the request (HTTP {status}): {_problem(response)}",
                permanent=True,
            )
        raise error_for(response, NETWORK)


def rate_limited(response):
    """X says when the window resets in x-rate-limit-reset (epoch seconds)."""
    wait = retry_after_seconds(response)
    reset = response.headers.get("x-rate-limit-reset", "").strip()
    if wait is None and reset.isdigit():
        wait = max(0, int(reset) - int(time.time()))
    when = f"; it asks to wait {wait} s" if wait is not None else ""
    return DeliveryError(f"{NETWORK} rate limit reached{when}", retry_after=wait)


def _data(response):
    try:
        data = response.json().get("data")
    except (ValueError, AttributeError):
        return {}
    return data if isinstance(data, dict) else {}


def _problem(response):
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if not isinstance(body, dict):
        return str(body)[:300]
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors else {}
    message = first.get("message") if isinstance(first, dict) else ""
    return str(message or body.get("detail") or body.get("title") or "")[:300]


def _as_sent(post):
    """(text as it was sent, whether a photo is attached): t.co links expanded, the photo's
    own t.co link dropped, HTML escapes undone."""
    text, has_photo = str(post.get("text") or ""), False
    urls = ((post.get("entities") or {}).get("urls")) or []
    for url in urls if isinstance(urls, list) else []:
        if not isinstance(url, dict) or not url.get("url"):
            continue
        has_photo = has_photo or bool(url.get("media_key"))
        replacement = "" if url.get("media_key") else str(url.get("expanded_url") or url["url"])
        text = text.replace(str(url["url"]), replacement)
    return html.unescape(text).strip(), has_photo
