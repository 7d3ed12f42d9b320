"""A fake Mastodon instance, answering with the shapes of docs.joinmastodon.org.

- GET  /api/v1/accounts/verify_credentials  -> 200 Account {"id", "username", "acct", "url", ...}
- POST /api/v2/media (multipart `file`)       -> 200 MediaAttachment, or 202 with "url": null
                                                 while it is processed (see `process_slowly`)
- GET  /api/v1/media/:id                      -> 206 while processing, then 200
- POST /api/v1/statuses (form or JSON: status, visibility, media_ids[]; header Idempotency-Key)
                                              -> 200 Status {"id", "url", "uri", "content", ...}
  The same Idempotency-Key from the same account within an hour gets the same status back:
  nothing new is posted (`idempotent_replays` counts them).
- DELETE /api/v1/statuses/:id                 -> 200 the deleted Status with its source "text"
- GET  /api/v1/accounts/:id/statuses?limit=N  -> 200 [Status, ...], newest first

Errors are {"error": "..."}: 401 "The access token is invalid", 404 "Record not found",
422 "Validation failed: ..." (blank text, over 500 characters, a bad visibility; "Cannot attach
files that have not finished processing" for media still processing), 429 "Too many requests"
with X-RateLimit-Limit/-Remaining/-Reset (an ISO 8601 time).
"""

import html
import itertools
import re
import time
from datetime import UTC, datetime, timedelta

from .base import FakeServer, Reply

TOKEN = "mastodon-user-token"
ACCOUNT = {
    "id": "109000000000000001",
    "username": "agence_lyon",
    "acct": "agence_lyon",
    "display_name": "Agence Lyon",
}
MAX_CHARACTERS = 500
IDEMPOTENCY_SECONDS = 3600
VISIBILITIES = ("public", "unlisted", "private", "direct")
URL_RE = re.compile(r"https?://[^\s<>\"]+", re.IGNORECASE)
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
MESSAGES = {
    401: "The access token is invalid",
    403: "This action is not allowed",
    404: "Record not found",
    422: "Validation failed: Text can't be blank",
    429: "Too many requests",
    500: "We're sorry, but something went wrong.",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def now_iso(moment=None):
    return (moment or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render(text):
    """The HTML Mastodon shows for a plain-text status: paragraphs, <br />, linked URLs."""

    def link(match):
        url = match[0]
        scheme, rest = url.split("://", 1)
        shown, hidden = rest[:30], rest[30:]
        return (
            f'<a href="{html.escape(url)}" rel="nofollow noopener" target="_blank">'
            f'<span class="invisible">{scheme}://</span>'
            f'<span class="{"ellipsis" if hidden else ""}">{html.escape(shown)}</span>'
            f'<span class="invisible">{html.escape(hidden)}</span></a>'
        )

    paragraphs = []
    for paragraph in re.split(r"\n{2,}", text.strip()):
        pieces, position = [], 0
        for match in URL_RE.finditer(paragraph):
            pieces.append(html.escape(paragraph[position : match.start()], quote=False))
            pieces.append(link(match))
            position = match.end()
        pieces.append(html.escape(paragraph[position:], quote=False))
        paragraphs.append("<p>" + "".join(pieces).replace("\n", "<br />") + "</p>")
    return "".join(paragraphs)


class FakeMastodon(FakeServer):
    def __init__(self):
        super().__init__()
        self.tokens = {TOKEN: ACCOUNT}
        self.statuses = {}  # id -> Status (with "_text", the source)
        self.media = {}  # id -> MediaAttachment (with "_polls_left", "_data")
        self.keys = {}  # (account id, Idempotency-Key) -> (status id, monotonic time)
        self.idempotent_replays = 0
        self._slow_media = 0
        self._ids = itertools.count(110000000000000001)

    def expire(self, token=TOKEN):
        self.tokens.pop(token, None)
        return self

    def process_slowly(self, times=1, polls=1):
        """The next `times` uploads answer 202; GET /api/v1/media/:id answers 206 `polls`
        times, then 200 (ready)."""
        self._slow_media = (times, polls)
        return self

    @property
    def posts(self):
        """What is on the account now, oldest first (each with "_text", the source)."""
        return list(self.statuses.values())

    # Errors: {"error": "..."}
    def error(self, status, request, **details):
        message = details.get("message") or MESSAGES.get(status, f"HTTP {status}")
        headers = {}
        if status == 401:
            headers["www-authenticate"] = 'Bearer error="invalid_token"'
        if status == 429:
            reset = datetime.now(UTC) + timedelta(seconds=details.get("wait", 300))
            headers = {
                "x-ratelimit-limit": "300",
                "x-ratelimit-remaining": "0",
                "x-ratelimit-reset": now_iso(reset),
            }
            if "retry_after" in details:
                headers["retry-after"] = str(details["retry_after"])
        return Reply(status, {"error": message}, headers)

    # Routes
    def route(self, request):
        account = self.tokens.get(request.bearer)
        if account is None:
            return self.error(401, request)
        method, path = request.method, request.path
        if method == "GET" and path == "/api/v1/accounts/verify_credentials":
            return Reply(200, self._account(account))
        if method == "POST" and path == "/api/v2/media":
            return self._upload(request)
        if match := re.fullmatch(r"/api/v1/media/(\d+)", path):
            if method == "GET":
                return self._media_status(request, match[1])
        if method == "POST" and path == "/api/v1/statuses":
            return self._post(request, account)
        if match := re.fullmatch(r"/api/v1/statuses/(\d+)", path):
            if method == "DELETE":
                return self._delete(request, match[1], account)
        if match := re.fullmatch(r"/api/v1/accounts/(\d+)/statuses", path):
            if method == "GET":
                return self._timeline(request, match[1])
        return self.error(404, request)

    def _account(self, account):
        return {
            **account,
            "url": f"{self.url}/@{account['username']}",
            "locked": False,
            "bot": False,
            "created_at": "2024-01-01T00:00:00.000Z",
            "note": "",
            "followers_count": 12,
            "statuses_count": len(self.statuses),
        }

    def _upload(self, request):
        if request.content_type != "multipart/form-data" or "file" not in request.files:
            return self.error(422, request, message="Validation failed: File can't be blank")
        upload = request.files["file"]
        if not upload.data.startswith(IMAGE_MAGIC) and upload.data[8:12] != b"WEBP":
            return self.error(
                422, request, message="Validation failed: File content type is invalid"
            )
        media_id = str(next(self._ids))
        slow, polls = 0, 0
        if self._slow_media:
            slow, polls = self._slow_media
            self._slow_media = (slow - 1, polls) if slow > 1 else 0
        attachment = {
            "id": media_id,
            "type": "image",
            "url": None if slow else f"{self.url}/system/media/{media_id}.png",
            "preview_url": f"{self.url}/system/media/{media_id}-small.png",
            "remote_url": None,
            "description": (request.form.get("description") or [None])[0],
            "blurhash": "UFGuj_00~q%M",
            "_polls_left": polls if slow else 0,
            "_data": upload.data,
        }
        self.media[media_id] = attachment
        return Reply(202 if slow else 200, _public(attachment))

    def _media_status(self, request, media_id):
        attachment = self.media.get(media_id)
        if attachment is None:
            return self.error(404, request)
        if attachment["_polls_left"] > 0:
            attachment["_polls_left"] -= 1
            return Reply(206, _public(attachment))
        attachment["url"] = attachment["url"] or f"{self.url}/system/media/{media_id}.png"
        return Reply(200, _public(attachment))

    def _post(self, request, account):
        key = request.headers.get("idempotency-key", "")
        self._forget_old_keys()
        if key and (account["id"], key) in self.keys:  # checked first, as Mastodon does
            self.idempotent_replays += 1
            return Reply(200, _public(self.statuses[self.keys[account["id"], key][0]]))
        if request.content_type == "application/json":
            fields = request.json if isinstance(request.json, dict) else {}
            text, visibility = fields.get("status", ""), fields.get("visibility") or "public"
            media_ids = fields.get("media_ids") or []
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            text = (request.form.get("status") or [""])[0]
            visibility = (request.form.get("visibility") or ["public"])[0]
            media_ids = request.form.get("media_ids[]", [])
        else:
            return self.error(422, request, message="Validation failed: Text can't be blank")
        if not isinstance(text, str) or not isinstance(media_ids, list):
            return self.error(422, request, message="Validation failed: Text is invalid")
        if not text.strip() and not media_ids:
            return self.error(422, request, message="Validation failed: Text can't be blank")
        if len(URL_RE.sub("x" * 23, text)) > MAX_CHARACTERS:
            return self.error(
                422,
                request,
                message=f"Validation failed: Text character limit of {MAX_CHARACTERS} exceeded",
            )
        if visibility not in VISIBILITIES:
            return self.error(422, request, message="Validation failed: Visibility is invalid")
        attachments = []
        for media_id in media_ids:
            attachment = self.media.get(str(media_id))
            if attachment is None:
                return self.error(404, request)
            if attachment["url"] is None:
                return self.error(
                    422,
                    request,
                    message="Cannot attach files that have not finished processing. "
                    "Try again in a moment!",
                )
            attachments.append(_public(attachment))
        status_id = str(next(self._ids))
        status = {
            "id": status_id,
            "created_at": now_iso(),
            "in_reply_to_id": None,
            "sensitive": False,
            "spoiler_text": "",
            "visibility": visibility,
            "language": "fr",
            "uri": f"{self.url}/users/{account['username']}/statuses/{status_id}",
            "url": f"{self.url}/@{account['username']}/{status_id}",
            "content": render(text),
            "account": self._account(account),
            "media_attachments": attachments,
            "mentions": [],
            "tags": [],
            "_text": text,
            "_account_id": account["id"],
            "_key": key,
        }
        self.statuses[status_id] = status
        if key:
            self.keys[account["id"], key] = (status_id, time.monotonic())
        return Reply(200, _public(status))

    def _forget_old_keys(self):
        cutoff = time.monotonic() - IDEMPOTENCY_SECONDS
        for entry, (_, at) in list(self.keys.items()):
            if at < cutoff:
                del self.keys[entry]

    def _delete(self, request, status_id, account):
        status = self.statuses.get(status_id)
        if status is None:
            return self.error(404, request)
        if status["_account_id"] != account["id"]:
            return self.error(403, request)
        del self.statuses[status_id]
        return Reply(200, {**_public(status), "text": status["_text"]})

    def _timeline(self, request, account_id):
        try:
            limit = min(max(int((request.query.get("limit") or ["20"])[0]), 1), 40)
        except ValueError:
            limit = 20
        mine = [s for s in reversed(self.statuses.values()) if s["_account_id"] == account_id]
        return Reply(200, [_public(s) for s in mine[:limit]])


def _public(entity):
    return {k: v for k, v in entity.items() if not k.startswith("_")}
