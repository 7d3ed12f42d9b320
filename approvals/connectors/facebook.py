"""Facebook Pages: the Graph API page feed and page photos, with a Page access token.

Shapes, from the Graph API documentation (Pages API, Page Feed, Page Photos, error handling):

- Post: POST /{version}/{page-id}/feed with form fields message, link, access_token
  → {"id": "{page-id}_{post-id}"}.
- Photo: POST /{version}/{page-id}/photos, multipart with the file as `source`, `caption` and
  access_token → {"id": "{photo-id}", "post_id": "{page-id}_{post-id}"}. A photo post carries
  no link preview, so the link goes in the caption.
- Delete: DELETE /{version}/{post-id} → {"success": true}.
- Recent posts: GET /{version}/{page-id}/feed?fields=id,message,created_time&limit=10
  → {"data": [...], "paging": {...}}. Health: GET /{version}/me?fields=id,name, which names the
  Page for a Page token.
- Errors: {"error": {"message", "type", "code", "error_subcode", "is_transient", "fbtrace_id"}},
  mostly with HTTP 400 whatever the cause, so the code decides: 190 and 102 the token is invalid
  or expired (subcodes 458 app removed, 460 password changed, 463/467 expired), 10 and 200-299 a
  permission is missing, 4/17/32/613/80001 a rate limit (the wait, in minutes, is in the
  X-Business-Use-Case-Usage header as estimated_time_to_regain_access), 506 a duplicate of the
  Page's last post, 1/2 or is_transient a temporary problem.

Calls other than POSTs send the token in the Authorization header, to keep it out of URLs.
Graph has no idempotency key: `find_delivery` looks for a recent Page post with exactly the text.
"""

import json
import os
import re

from django.conf import settings
from django.core.exceptions import ValidationError

from approvals import media

from .base import (
    Connector,
    Delivered,
    DeliveryError,
    Health,
    access_token,
    external_account_id,
)
from .http import error_for, request, retry_after_seconds

NETWORK = "Facebook"
DEFAULT_VERSION = "v23.0"
PAGE_ID = re.compile(r"[0-9]{1,40}")
VERSION = re.compile(r"v[0-9]{1,2}\.[0-9]")
POST_ID = re.compile(r"[0-9]{1,40}_[0-9]{1,40}")
ANY_STATUS = range(100, 600)
FIND_LIMIT = 10

TOKEN_CODES = {102, 190, 2500}
PERMISSION_CODES = {3, 10, *range(200, 300)}
RATE_CODES = {4, 17, 32, 613, 80001}
TRANSIENT_CODES = {1, 2}
EXPIRED_SUBCODES = {
    458: "the app was removed from the account",
    459: "the user must log in to Facebook to unlock the account",
    460: "the password was changed",
    463: "the token expired",
    464: "the user account is not confirmed",
    467: "the token is no longer valid",
}


def post_url(post_id):
    page, _, post = post_id.partition("_")
    return f"https://www.facebook.com/{page}/posts/{post}"


def message_of(content):
    """The text of the post as Facebook shows it: a photo's caption carries the link."""
    if content.image_path and content.link:
        return f"{content.text}\n{content.link}"
    return content.text


class FacebookConnector(Connector):
    network = "facebook"
    label = "Facebook Page"
    max_length = 63206

    def clean_settings(self, config):
        page_id = str(config.get("page_id") or "").strip()
        if page_id and not PAGE_ID.fullmatch(page_id):
            raise ValidationError(
                f"settings.page_id must be the numeric id of the Facebook Page, not {page_id!r} "
                "(Page settings → About → Page ID). Leave it empty to use the Page chosen when "
                "connecting the account."
            )
        version = str(config.get("graph_version") or DEFAULT_VERSION).strip()
        if not VERSION.fullmatch(version):
            raise ValidationError(
                "settings.graph_version must be a Graph API version such as "
                f"{DEFAULT_VERSION}, not {version!r}."
            )
        return {**config, "page_id": page_id, "graph_version": version}

    # Publishing
    def publish(self, account, content, idempotency_key):
        page, token = self._page(account), access_token(account)
        if content.image_path:
            data = content.image_bytes()
            name = os.path.basename(content.image_path)
            answer = self._call(
                account,
                "POST",
                f"/{page}/photos",
                data={"caption": message_of(content), "published": "true", "access_token": token},
                files={"source": (name, data, media.content_type(content.image_path))},
            )
            post_id = str(answer.get("post_id") or "")
        else:
            fields = {"message": content.text, "access_token": token}
            if content.link:
                fields["link"] = content.link
            answer = self._call(account, "POST", f"/{page}/feed", data=fields)
            post_id = str(answer.get("id") or "")
        if not POST_ID.fullmatch(post_id):
            raise DeliveryError(
                f"{NETWORK} accepted the post but did not say its id ({post_id[:100]!r}); "
                "check the Page before retrying",
                permanent=True,
            )
        return Delivered(external_id=post_id, url=post_url(post_id))

    def retract(self, account, external_id):
        if not POST_ID.fullmatch(external_id or ""):
            raise DeliveryError(f"{external_id!r} is not a Facebook post id", permanent=True)
        try:
            answer = self._call(account, "DELETE", f"/{external_id}", token=access_token(account))
        except DeliveryError as error:
            if (
                getattr(error, "graph_code", None) == 100
                and getattr(error, "graph_subcode", 0) == 33
            ):
                return  # the post does not exist (any more)
            raise
        if answer.get("success") is not True:
            raise DeliveryError(f"{NETWORK} did not confirm the deletion: {answer}"[:300])

    def find_delivery(self, account, idempotency_key, content):
        """The Page's recent post with exactly this text, if the token may read the feed.

        Raises DeliveryError when Facebook cannot answer now (try later); None when no such post
        is there, or when the token may not read the Page's feed (cannot tell).
        """
        page, token = self._page(account), access_token(account)
        try:
            answer = self._call(
                account,
                "GET",
                f"/{page}/feed",
                params={"fields": "id,message,created_time", "limit": FIND_LIMIT},
                token=token,
            )
        except DeliveryError as error:
            if getattr(error, "graph_code", None) in PERMISSION_CODES:
                return None
            raise
        expected = message_of(content)
        if not expected:
            return None  # a post without text cannot be told apart from another
        for item in answer.get("data") or []:
            post_id = str(item.get("id") or "") if isinstance(item, dict) else ""
            if (
                item.get("message", "") == expected
                and POST_ID.fullmatch(post_id)
                and post_id.startswith(f"{page}_")
            ):
                return Delivered(external_id=post_id, url=post_url(post_id))
        return None

    def health(self, account):
        try:
            answer = self._call(
                account,
                "GET",
                "/me",
                params={"fields": "id,name"},
                token=access_token(account),
            )
        except DeliveryError as error:
            return Health(ok=False, detail=str(error), reconnect=error.reconnect)
        page = self._page_id(account)
        name = answer.get("name") or answer.get("id")
        if page and str(answer.get("id")) != page:
            return Health(
                ok=False,
                detail=f"the token is {name}'s, not Page {page}'s: connect with a Page access "
                "token of this Page",
                reconnect=True,
            )
        return Health(ok=True, detail=f"{NETWORK} accepts the token of {name}")

    # Calls
    @staticmethod
    def _page_id(account):
        return (account.settings or {}).get("page_id") or external_account_id(account)

    def _page(self, account):
        page = self._page_id(account)
        if not PAGE_ID.fullmatch(page or ""):
            raise DeliveryError(
                "the account has no Facebook Page id (settings.page_id)", permanent=True
            )
        return page

    def _call(self, account, method, path, *, token=None, **kwargs):
        """One Graph call; the JSON answer, or DeliveryError in plain words."""
        version = (account.settings or {}).get("graph_version") or DEFAULT_VERSION
        base = settings.REVIEWFLOW["API_BASE_URLS"]["facebook"].rstrip("/")
        if token is not None:
            kwargs["headers"] = {"Authorization": f"Bearer {token}"}
        response = request(
            method, f"{base}/{version}{path}", network=NETWORK, expected=ANY_STATUS, **kwargs
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if 200 <= response.status_code < 300 and isinstance(answer, dict):
            return answer
        if 200 <= response.status_code < 300:
            raise DeliveryError(f"{NETWORK} answered without JSON (HTTP {response.status_code})")
        raise graph_error(response, answer)


def graph_error(response, answer):
    """A Graph refusal in plain words; the Graph code decides, whatever the HTTP status."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return error_for(response, NETWORK)
    code, subcode = error["code"], error.get("error_subcode")
    said = str(error.get("error_user_msg") or error.get("message") or "")[:300]
    if code in TOKEN_CODES:
        why = EXPIRED_SUBCODES.get(subcode, "expired or revoked")
        found = DeliveryError(
            f"{NETWORK} refused the access token ({why}): reconnect the account. {said}".strip(),
            reconnect=True,
        )
    elif code in RATE_CODES:
        wait = retry_after_seconds(response)
        if wait is None:
            wait = _regain_seconds(response)
        when = f"; it asks to wait {wait} s" if wait is not None else ""
        found = DeliveryError(f"{NETWORK} rate limit reached (code {code}){when}", retry_after=wait)
    elif code == 506:
        found = DeliveryError(
            f"{NETWORK} refused the post as a duplicate: the Page's previous post has the same "
            "text",
            permanent=True,
        )
    elif code in PERMISSION_CODES:
        found = DeliveryError(
            f"{NETWORK} refused: the token lacks a permission (pages_manage_posts) or the "
            f"person who connected it can no longer post on this Page; reconnect. {said}".strip(),
            reconnect=True,
        )
    elif code in TRANSIENT_CODES or error.get("is_transient") or response.status_code >= 500:
        found = DeliveryError(f"{NETWORK} had a temporary problem (code {code}). {said}".strip())
    elif code == 368:
        found = DeliveryError(
            f"{NETWORK} blocked the post under its community standards. {said}".strip(),
            permanent=True,
        )
    else:
        found = DeliveryError(
            f"{NETWORK} refused the request (code {code}): {said}", permanent=True
        )
    found.graph_code, found.graph_subcode = code, subcode
    return found


def _regain_seconds(response):
    """Seconds until access returns: X-Business-Use-Case-Usage's estimate, in minutes."""
    try:
        usage = json.loads(response.headers.get("X-Business-Use-Case-Usage") or "{}")
    except ValueError:
        return None
    minutes = [
        entry.get("estimated_time_to_regain_access")
        for entries in (usage.values() if isinstance(usage, dict) else ())
        if isinstance(entries, list)
        for entry in entries
        if isinstance(entry, dict)
    ]
    minutes = [m for m in minutes if isinstance(m, int) and m >= 0]
    return max(minutes) * 60 if minutes else None
