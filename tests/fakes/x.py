"""A fake X API v2, answering with the shapes of its public documentation (docs.x.com).

- GET  /2/users/me                      -> 200 {"data": {"id", "name", "username"}}
- POST /2/media/upload  (multipart: `media` file, `media_category`, optional `media_type`)
                                        -> 200 {"data": {"id", "media_key", "size",
                                                         "expires_after_secs", "image"}}
- POST /2/tweets        (JSON {"text", "media": {"media_ids": [...]}})
                                        -> 201 {"data": {"id", "text"}}
- DELETE /2/tweets/:id                  -> 200 {"data": {"deleted": true}}
- GET  /2/users/:id/tweets?max_results=5..100[&tweet.fields=entities]
                                        -> 200 {"data": [...], "meta": {"result_count", ...}}

As X does, a post's stored text has every URL replaced by a t.co link (listed in
entities.urls with its expanded_url), a photo adds a t.co link of its own at the end (an
entity with a media_key), and &, < and > come back HTML-escaped. A text identical to one of
the user's posts is refused (403, duplicate content). Errors are problem objects
({"title", "detail", "type", "status"}); 429 carries x-rate-limit-limit/-remaining/-reset
(epoch seconds). Without a valid user-context bearer token: 401.
"""

import html
import itertools
import re
import time

from .base import FakeServer, Reply

TOKEN = "x-user-token"
USER = {"id": "1450000000000000001", "name": "Agence Lyon", "username": "agence_lyon"}
DUPLICATE = "You are not allowed to create a Tweet with duplicate content."
URL_RE = re.compile(r"https?://\S+", re.IGNORECASE)
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
TITLES = {
    400: "Invalid Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found Error",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


class FakeX(FakeServer):
    def __init__(self):
        super().__init__()
        self.tokens = {TOKEN}
        self.tweets = {}  # id -> {"id", "text", "entities", "author_id", "source", "media_ids"}
        self.media = {}  # id -> {"size", "type", "data"}
        self._ids = itertools.count(1866000000000000001)
        self._short = itertools.count(1)

    def expire(self, token=TOKEN):
        """The token stops working, as an expired or revoked one does."""
        self.tokens.discard(token)
        return self

    @property
    def posts(self):
        """What is on the account now, oldest first: {"id", "source" (text sent), "media_ids"}."""
        return list(self.tweets.values())

    # Errors, shaped as X's problem objects
    def error(self, status, request, **details):
        detail = details.get("message") or TITLES.get(status, f"HTTP {status}")
        body = {
            "title": TITLES.get(status, "Error"),
            "detail": detail,
            "type": "about:blank",
            "status": status,
        }
        headers = {}
        if status == 429:
            wait = details.get("wait", 60)
            headers = {
                "x-rate-limit-limit": "100",
                "x-rate-limit-remaining": "0",
                "x-rate-limit-reset": str(int(time.time() + wait)),
            }
            if "retry_after" in details:
                headers["retry-after"] = str(details["retry_after"])
        return Reply(status, body, headers)

    def _invalid(self, message, **parameters):
        return Reply(
            400,
            {
                "errors": [{"parameters": parameters, "message": message}],
                "title": "Invalid Request",
                "detail": "One or more parameters to your request was invalid.",
                "type": "https://api.twitter.com/2/problems/invalid-request",
            },
        )

    # Routes
    def route(self, request):
        if request.bearer not in self.tokens:
            return self.error(401, request, message="Unauthorized")
        method, path = request.method, request.path
        if method == "GET" and path == "/2/users/me":
            return Reply(200, {"data": dict(USER)})
        if method == "POST" and path == "/2/media/upload":
            return self._upload(request)
        if method == "POST" and path == "/2/tweets":
            return self._create(request)
        if match := re.fullmatch(r"/2/tweets/(\d+)", path):
            if method == "DELETE":
                return self._delete(match[1])
        if match := re.fullmatch(r"/2/users/(\d+)/tweets", path):
            if method == "GET":
                return self._timeline(request, match[1])
        return self.error(404, request, message="The requested resource could not be found.")

    def _upload(self, request):
        if request.content_type != "multipart/form-data":
            return self._invalid("The media upload must be multipart/form-data.")
        media = request.files.get("media")
        if media is None:
            return self._invalid("The `media` field is required.", media=[])
        category = (request.form.get("media_category") or [""])[0]
        if category not in ("tweet_image", "tweet_gif", "dm_image"):
            return self._invalid(
                "The `media_category` field must be tweet_image for a post's photo.",
                media_category=[category],
            )
        if not media.data.startswith(IMAGE_MAGIC) and media.data[8:12] != b"WEBP":
            return self._invalid("media type unrecognized.")
        media_id = str(next(self._ids))
        kind = (request.form.get("media_type") or [media.content_type])[0]
        self.media[media_id] = {"size": len(media.data), "type": kind, "data": media.data}
        return Reply(
            200,
            {
                "data": {
                    "id": media_id,
                    "media_key": f"3_{media_id}",
                    "size": len(media.data),
                    "expires_after_secs": 86400,
                    "image": {"image_type": kind},
                }
            },
        )

    def _create(self, request):
        if request.content_type != "application/json" or not isinstance(request.json, dict):
            return self._invalid("The request body must be a JSON object.")
        body = request.json
        unknown = set(body) - {"text", "media", "reply_settings", "for_super_followers_only"}
        if unknown:
            return self._invalid(f"The body field {sorted(unknown)[0]!r} is not supported here.")
        text = body.get("text", "")
        media_ids = (body.get("media") or {}).get("media_ids", [])
        if not isinstance(text, str) or not isinstance(media_ids, list):
            return self._invalid("`text` must be a string and `media.media_ids` a list.")
        if not all(isinstance(m, str) and m in self.media for m in media_ids):
            return self._invalid("Your media IDs are invalid.", media_ids=media_ids)
        if not text.strip() and not media_ids:
            return self._invalid("Post text or media is required.")
        if any(t["source"] == text for t in self.tweets.values()):
            return self.error(403, request, message=DUPLICATE)
        tweet_id = str(next(self._ids))
        shown, entities = self._shorten(text)
        if media_ids:  # a photo shows as one more t.co link at the end
            short = f"https://t.co/{next(self._short):010d}"
            start = len(shown) + 1
            shown = f"{shown} {short}"
            entities.append(
                {
                    "start": start,
                    "end": len(shown),
                    "url": short,
                    "expanded_url": f"https://x.com/{USER['username']}/status/{tweet_id}/photo/1",
                    "display_url": "pic.x.com/photo",
                    "media_key": f"3_{media_ids[0]}",
                }
            )
        self.tweets[tweet_id] = {
            "id": tweet_id,
            "text": html.escape(shown, quote=False),
            "entities": {"urls": entities} if entities else {},
            "author_id": USER["id"],
            "source": text,
            "media_ids": media_ids,
        }
        return Reply(201, {"data": {"id": tweet_id, "text": self.tweets[tweet_id]["text"]}})

    def _shorten(self, text):
        shown, entities, position = "", [], 0
        for match in URL_RE.finditer(text):
            shown += text[position : match.start()]
            short = f"https://t.co/{next(self._short):010d}"
            entities.append(
                {
                    "start": len(shown),
                    "end": len(shown) + len(short),
                    "url": short,
                    "expanded_url": match[0],
                    "display_url": match[0].split("://", 1)[1][:25],
                }
            )
            shown += short
            position = match.end()
        return shown + text[position:], entities

    def _delete(self, tweet_id):
        if self.tweets.pop(tweet_id, None) is None:
            return Reply(
                404,
                {
                    "title": "Not Found Error",
                    "detail": f"Could not find tweet with id: [{tweet_id}].",
                    "type": "https://api.twitter.com/2/problems/resource-not-found",
                },
            )
        return Reply(200, {"data": {"deleted": True}})

    def _timeline(self, request, user_id):
        try:
            limit = int((request.query.get("max_results") or ["10"])[0])
        except ValueError:
            limit = 0
        if not 5 <= limit <= 100:
            return self._invalid("The `max_results` query parameter value is not between 5 and 100")
        fields = ",".join(request.query.get("tweet.fields", [])).split(",")
        newest = [t for t in reversed(self.tweets.values()) if t["author_id"] == user_id][:limit]
        data = []
        for tweet in newest:
            shown = {
                "id": tweet["id"],
                "text": tweet["text"],
                "edit_history_tweet_ids": [tweet["id"]],
            }
            if "entities" in fields and tweet["entities"]:
                shown["entities"] = tweet["entities"]
            data.append(shown)
        meta = {"result_count": len(data)}
        if data:
            meta.update(newest_id=data[0]["id"], oldest_id=data[-1]["id"])
        return Reply(200, {"data": data, "meta": meta} if data else {"meta": meta})
