"""A fake Facebook Graph API for one Page: feed, photos, delete, /me, as documented, on loopback.

It checks what Graph checks (the version in the path, an access token as the access_token
field or parameter or an Authorization header, that it is this Page's token, required fields,
an uploaded file for photos), answers errors as Graph does — HTTP 400 with
{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}} — refuses a post whose
text repeats the Page's last post (code 506), and records what was published:

    fake = FakeFacebook().start()
    fake.posts       # post id -> FakePagePost(message (a photo's caption), link, image, deleted)
    fake.published   # live posts, oldest first
    fake.expire_token()                        # code 190, subcode 463
    fake.fail(400, code=32, minutes=3)         # a Page rate limit, X-Business-Use-Case-Usage
    fake.fail(429, retry_after=7)              # code 4, with a Retry-After header
    fake.fail(503)                             # code 2, is_transient (fail/stall: base.py)
"""

import itertools
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from .base import FakeServer, Reply, Upload

PAGE_ID = "104857600123456"
PAGE_NAME = "Agence Lyon"
USER_ID = "10229876543210"
VERSION = re.compile(r"v[0-9]{1,2}\.[0-9]")
MESSAGES = {
    1: "An unknown error occurred",
    2: "An unexpected error has occurred. Please retry your request later.",
    4: "(#4) Application request limit reached",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    100: "(#100) Invalid parameter",
    190: "Invalid OAuth access token - Cannot parse access token",
    200: "(#200) Permissions error",
    506: "Duplicate status message",
}
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def arg(request, name):
    return (request.query.get(name) or [""])[-1]


@dataclass
class FakePagePost:
    id: str
    message: str
    link: str
    created_time: str
    image: bytes | None = None
    photo_id: str = ""
    deleted: bool = False


class FakeFacebook(FakeServer):
    def __init__(self, page_id=PAGE_ID, token="fb-page-token", user_token="fb-user-token"):
        super().__init__()
        self.page_id = page_id
        self.token = token  # the Page access token
        self.user_token = user_token  # a user token: /me names the user, posting is refused
        self.expired = False
        self.posts: dict[str, FakePagePost] = {}
        self._ids = itertools.count(122100000000000001)

    @property
    def published(self):
        return [post for post in self.posts.values() if not post.deleted]

    def expire_token(self):
        self.expired = True

    def error(
        self,
        status,
        request=None,
        *,
        code=None,
        message=None,
        subcode=None,
        kind="OAuthException",
        transient=None,
        user_msg=None,
        minutes=None,
        retry_after=None,
    ):
        """Graph's error shape; `code` defaults from the status as Graph would choose it."""
        if code is None:
            code = {401: 190, 403: 200, 429: 4}.get(status, 2 if status >= 500 else 100)
        error = {
            "message": message or MESSAGES.get(code, "An unknown error has occurred."),
            "type": kind,
            "code": code,
            "is_transient": status >= 500 if transient is None else transient,
            "fbtrace_id": "A" + secrets.token_hex(10),
        }
        if subcode is not None:
            error["error_subcode"] = subcode
        if user_msg:
            error["error_user_msg"] = user_msg
        headers = {}
        if minutes is not None:
            usage = {
                self.page_id: [
                    {
                        "type": "pages",
                        "call_count": 100,
                        "total_cputime": 12,
                        "total_time": 40,
                        "estimated_time_to_regain_access": minutes,
                    }
                ]
            }
            headers["X-Business-Use-Case-Usage"] = json.dumps(usage)
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return Reply(status, {"error": error}, headers)

    # Serving (the base calls `route` with its lock held: one request changes state at a time)
    def route(self, request):
        version, _, path = request.path.lstrip("/").partition("/")
        if not VERSION.fullmatch(version):
            return self.error(400, code=2500, message=f"Unknown path components: /{version}")
        fields = {k: v[-1] for k, v in request.form.items()}
        fields.update(request.files)
        token = self._token(request, fields)
        if not token:
            return self.error(
                400,
                code=2500,
                message="An active access token must be used to query information about "
                "the current user.",
            )
        if token not in (self.token, self.user_token):
            return self.error(
                400, code=190, message="Invalid OAuth access token - Cannot parse access token"
            )
        if self.expired:
            return self.error(
                400,
                code=190,
                message="Error validating access token: Session has expired on Friday, 27-Nov-26 "
                "09:00:00 PST. The current time is Saturday, 28-Nov-26 16:00:00 PST.",
                subcode=463,
            )
        parts = path.split("/")
        if request.method == "GET" and parts == ["me"]:
            me = (
                {"id": self.page_id, "name": PAGE_NAME}
                if token == self.token
                else {"id": USER_ID, "name": "Alice Martin"}
            )
            return Reply(200, self._pick(me, arg(request, "fields") or "id,name"))
        if len(parts) == 2 and parts[0] != self.page_id and parts[1] in ("feed", "photos"):
            return self.error(
                400,
                code=100,
                message=f"(#100) Object with ID '{parts[0]}' does not exist, cannot be loaded "
                "due to missing permissions, or does not support this operation",
                subcode=33,
            )
        if parts == [self.page_id, "feed"] and request.method == "GET":
            return self._feed(request)
        if request.method == "POST" and parts[:1] == [self.page_id]:
            if token != self.token:
                return self.error(
                    403,
                    code=200,
                    message="(#200) If posting to a page, requires both pages_read_engagement "
                    "and pages_manage_posts as an admin with sufficient administrative permission",
                )
            if parts[1:] == ["feed"]:
                return self._publish(fields)
            if parts[1:] == ["photos"]:
                return self._photo(fields)
        if request.method == "DELETE" and len(parts) == 1:
            return self._delete(parts[0], token)
        return self.error(
            400,
            code=100,
            message=f"Unsupported {request.method} request.",
            kind="GraphMethodException",
        )

    @staticmethod
    def _token(request, fields):
        auth = request.headers.get("authorization", "")
        for scheme in ("Bearer ", "OAuth "):
            if auth.startswith(scheme):
                return auth.removeprefix(scheme)
        return fields.get("access_token") or arg(request, "access_token") or ""

    @staticmethod
    def _pick(item, fields):
        return {name: item[name] for name in fields.split(",") if name in item}

    def _new_post(self, message, link, image=None):
        live = self.published
        if live and live[-1].message == message and message:
            return None
        number = next(self._ids)
        post = FakePagePost(
            id=f"{self.page_id}_{number}",
            message=message,
            link=link,
            created_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+0000"),
            image=image,
            photo_id=str(number + 7) if image is not None else "",
        )
        self.posts[post.id] = post
        return post

    def _duplicate(self):
        return self.error(
            400,
            code=506,
            message="Duplicate status message",
            subcode=1455006,
            user_msg="This status update is identical to the last one you posted. Try posting "
            "something different, or delete your previous update.",
        )

    def _publish(self, fields):
        message, link = fields.get("message", ""), fields.get("link", "")
        if not isinstance(message, str) or not isinstance(link, str):
            return self.error(400, code=100, message="(#100) message and link must be strings")
        if not message and not link:
            return self.error(400, code=100, message="(#100) Missing message or attachment")
        if link and not link.startswith(("http://", "https://")):
            return self.error(
                400, code=100, message="(#100) The parameter link must be a valid URL"
            )
        post = self._new_post(message, link)
        return Reply(200, {"id": post.id}) if post else self._duplicate()

    def _photo(self, fields):
        source = fields.get("source")
        if not isinstance(source, Upload) or not source.data:
            return self.error(400, code=324, message="(#324) Requires upload file")
        if not source.data.startswith(IMAGE_MAGIC):
            return self.error(400, code=324, message="(#324) Missing or invalid image file")
        caption = fields.get("caption", fields.get("message", ""))
        if fields.get("published", "true") != "true":
            return self.error(
                400, code=100, message="(#100) only published photos are supported here"
            )
        post = self._new_post(caption, "", image=source.data)
        if post is None:
            return self._duplicate()
        return Reply(200, {"id": post.photo_id, "post_id": post.id})

    def _feed(self, request):
        limit = int(arg(request, "limit") or 25)
        fields = arg(request, "fields") or "id,message,created_time"
        posts = sorted(self.published, key=lambda p: p.id, reverse=True)[:limit]
        data = [
            self._pick(
                {
                    "id": p.id,
                    "created_time": p.created_time,
                    **({"message": p.message} if p.message else {}),
                },
                fields,
            )
            for p in posts
        ]
        return Reply(
            200, {"data": data, "paging": {"cursors": {"before": "QVFI", "after": "QVFJ"}}}
        )

    def _delete(self, object_id, token):
        post = self.posts.get(object_id)
        if post is None or post.deleted:
            return self.error(
                400,
                code=100,
                message=f"Unsupported delete request. Object with ID '{object_id}' does "
                "not exist, cannot be loaded due to missing permissions, or does not "
                "support this operation.",
                subcode=33,
                kind="GraphMethodException",
            )
        if token != self.token:
            return self.error(403, code=200, message="(#200) Permissions error")
        post.deleted = True
        return Reply(200, {"success": True})
