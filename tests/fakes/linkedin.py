"""A fake LinkedIn API: the Posts and Images APIs and /v2/userinfo, as documented, on loopback.

It checks what LinkedIn checks (bearer token, LinkedIn-Version, X-Restli-Protocol-Version,
URL-encoded URNs, the post's fields, who may post as which author, image ownership), renders
`commentary` from LinkedIn's little text format as LinkedIn does (an unescaped reserved
character cuts the text there), refuses a post repeating a live post of the same author (422
"Content is a duplicate of …"), and records what was published:

    fake = FakeLinkedIn().start()
    fake.posts        # URN -> FakePost(author, commentary, text, content, image bytes, deleted)
    fake.published    # live posts, oldest first
    fake.expire_token()
    fake.fail(429, on="POST /rest/posts", retry_after=7)  # fail/stall: tests/fakes/base.py
    fake.fail(503, message="Service Unavailable")

Errors are {"status", "message", "code"?}, as LinkedIn answers them.
"""

import itertools
import re
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import unquote

from .base import FakeServer, Reply

MEMBER_SUB = "aBcD3fGh1J"
ORGANIZATION = "urn:li:organization:2414183"
RESERVED = set("\\|{}@[]()<>#*_~")
AUTHOR = re.compile(r"urn:li:(person|organization):[A-Za-z0-9_-]+")
VERSION = re.compile(r"20\d\d(0[1-9]|1[0-2])")


MESSAGES = {
    400: "Bad Request",
    401: "Invalid access token",
    403: "Not enough permissions to access this resource",
    404: "Not Found",
    422: "Unprocessable Entity",
    429: "Resource level throttle limit reached",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def arg(request, name):
    return (request.query.get(name) or [""])[-1]


def render_little(commentary):
    """What LinkedIn shows for a little-format commentary: escapes resolved, cut at the first
    unescaped reserved character other than a hashtag's '#'."""
    shown, i = [], 0
    while i < len(commentary):
        char = commentary[i]
        if char == "\\" and i + 1 < len(commentary):
            shown.append(commentary[i + 1])
            i += 2
            continue
        if char == "#" and i + 1 < len(commentary) and commentary[i + 1].isalnum():
            shown.append(char)
        elif char in RESERVED:
            break  # LinkedIn's parser stops here: the rest of the post is lost
        else:
            shown.append(char)
        i += 1
    return "".join(shown)


@dataclass
class FakePost:
    urn: str
    author: str
    commentary: str
    text: str  # as LinkedIn shows it
    body: dict
    created_at: int
    image: bytes | None = None
    deleted: bool = False

    @property
    def content(self):
        return self.body.get("content") or {}


@dataclass
class FakeImage:
    urn: str
    owner: str
    upload_path: str
    data: bytes | None = None
    headers: dict = field(default_factory=dict)


class FakeLinkedIn(FakeServer):
    def __init__(self, token="li-access-token", oldest_version="202501"):
        super().__init__()
        self.token = token
        self.oldest_version = oldest_version
        self.expired = False
        self.member = f"urn:li:person:{MEMBER_SUB}"
        self.organizations = {ORGANIZATION}  # pages the member administers
        self.posts: dict[str, FakePost] = {}
        self.images: dict[str, FakeImage] = {}
        self.upload_base = None  # where uploadUrl points; None: this server
        self._ids = itertools.count(7260000000000000001)

    @property
    def published(self):
        return [post for post in self.posts.values() if not post.deleted]

    def expire_token(self):
        self.expired = True

    def error(self, status, request=None, *, message=None, code=None, retry_after=None):
        body = {"status": status, "message": message or MESSAGES.get(status, f"HTTP {status}")}
        if code:
            body["code"] = code
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return Reply(status, body, headers)

    # Serving (the base calls `route` with its lock held: one request changes state at a time)
    def route(self, request):
        refusal = self._authenticate(request)
        if refusal:
            return refusal
        route = (request.method, request.path)
        if route == ("GET", "/v2/userinfo"):
            return Reply(
                200,
                {
                    "sub": MEMBER_SUB,
                    "name": "Alice Martin",
                    "email_verified": True,
                    "locale": "fr_FR",
                },
            )
        if request.method == "PUT" and request.path.startswith("/dms-uploads/"):
            return self._upload(request)
        refusal = self._check_versioned(request)
        if refusal:
            return refusal
        if route == ("POST", "/rest/posts"):
            return self._create(request)
        if route == ("GET", "/rest/posts"):
            return self._find(request)
        if request.method == "DELETE" and request.path.startswith("/rest/posts/"):
            return self._delete(request)
        if route == ("POST", "/rest/images") and arg(request, "action") == "initializeUpload":
            return self._initialize_upload(request)
        return self.error(404, message=f"No resource found for {request.method} {request.path}")

    def _authenticate(self, request):
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") != self.token:
            return self.error(401, message="Invalid access token", code="INVALID_ACCESS_TOKEN")
        if self.expired:
            return self.error(
                401,
                message="The token used in the request has expired",
                code="EXPIRED_ACCESS_TOKEN",
            )
        return None

    def _check_versioned(self, request):
        version = request.headers.get("linkedin-version", "")
        if not version:
            return self.error(
                400,
                message="A version must be present. Please specify a version by adding the "
                "LinkedIn-Version header.",
                code="VERSION_MISSING",
            )
        if not VERSION.fullmatch(version) or version < self.oldest_version:
            return self.error(
                426,
                message=f"Requested version {version} is not active",
                code="NONEXISTENT_VERSION",
            )
        if request.headers.get("x-restli-protocol-version") != "2.0.0":
            return self.error(400, message="X-Restli-Protocol-Version 2.0.0 is required")
        return None

    def _may_act_as(self, author):
        return author == self.member or author in self.organizations

    def _denied(self, what):
        return self.error(
            403, message=f"Not enough permissions to access: {what}", code="ACCESS_DENIED"
        )

    def _create(self, request):
        if request.content_type != "application/json":
            return self.error(415, message="Content-Type must be application/json")
        body = request.json
        if not isinstance(body, dict):
            return self.error(400, message="Unable to parse the request body as JSON")
        problem = self._invalid_post(body)
        if problem:
            return self.error(422, message=f"ERROR :: {problem}")
        author = body["author"]
        if not self._may_act_as(author):
            return self._denied("partnerApiPostsExternal.CREATE")
        image = None
        media = (body.get("content") or {}).get("media")
        if media:
            found = self.images.get(media.get("id"))
            if found is None or found.data is None:
                return self.error(
                    422,
                    message=f"ERROR :: /content/media/id :: {media.get('id')} "
                    "is not an uploaded image",
                )
            if found.owner != author:
                return self.error(
                    400,
                    message="Content(s) you provided must be owned by post author",
                    code="INVALID_CONTENT_OWNERSHIP",
                )
            image = found.data
        for post in self.published:
            if post.author == author and post.commentary == body["commentary"]:
                return self.error(422, message=f"Content is a duplicate of {post.urn}")
        urn = f"urn:li:share:{next(self._ids)}"
        self.posts[urn] = FakePost(
            urn=urn,
            author=author,
            commentary=body["commentary"],
            text=render_little(body["commentary"]),
            body=body,
            created_at=int(time.time() * 1000),
            image=image,
        )
        return Reply(201, None, {"x-restli-id": urn, "x-linkedin-id": urn})

    @staticmethod
    def _invalid_post(body):
        author = body.get("author")
        if not isinstance(author, str) or not AUTHOR.fullmatch(author):
            return f"/author :: {author!r} is not a person or organization URN"
        if not isinstance(body.get("commentary"), str):
            return "/commentary :: field is required"
        if body.get("visibility") not in ("PUBLIC", "CONNECTIONS", "LOGGED_IN", "CONTAINER"):
            return "/visibility :: invalid value"
        distribution = body.get("distribution")
        if not isinstance(distribution, dict) or distribution.get("feedDistribution") not in (
            "MAIN_FEED",
            "NONE",
        ):
            return "/distribution/feedDistribution :: field is required"
        if body.get("lifecycleState") != "PUBLISHED":
            return "/lifecycleState :: only PUBLISHED is accepted here"
        if "isReshareDisabledByAuthor" in body and not isinstance(
            body["isReshareDisabledByAuthor"], bool
        ):
            return "/isReshareDisabledByAuthor :: must be a boolean"
        content = body.get("content")
        if content is None:
            return None
        if not isinstance(content, dict) or len(content) != 1:
            return "/content :: exactly one of article, media, multiImage, poll"
        if "article" in content:
            article = content["article"]
            if not isinstance(article, dict) or not str(article.get("source", "")).startswith(
                ("http://", "https://")
            ):
                return "/content/article/source :: must be a URL"
            if not article.get("title"):
                return "/content/article/title :: field is required"
        elif "media" in content:
            media = content["media"]
            if not isinstance(media, dict) or not str(media.get("id", "")).startswith(
                "urn:li:image:"
            ):
                return "/content/media/id :: must be an image URN"
        else:
            return f"/content :: unsupported content {sorted(content)}"
        return None

    def _find(self, request):
        if arg(request, "q") != "author":
            return self.error(400, message="q=author is required")
        author = arg(request, "author")
        if not self._may_act_as(author):
            return self._denied("partnerApiPostsExternal.FINDER-author")
        count = int(arg(request, "count") or 10)
        posts = sorted(
            (p for p in self.published if p.author == author),
            key=lambda p: p.created_at,
            reverse=True,
        )[:count]
        elements = [
            {
                **post.body,
                "id": post.urn,
                "createdAt": post.created_at,
                "lastModifiedAt": post.created_at,
                "publishedAt": post.created_at,
                "lifecycleStateInfo": {"isEditedByAuthor": False},
            }
            for post in posts
        ]
        return Reply(
            200, {"elements": elements, "paging": {"start": 0, "count": count, "links": []}}
        )

    def _delete(self, request):
        raw = request.path.removeprefix("/rest/posts/")
        if ":" in raw:
            return self.error(400, message="Syntax exception in path variables: encode the URN")
        urn = unquote(raw)
        post = self.posts.get(urn)
        if post is None:
            return self.error(404, message=f"Post {urn} does not exist")
        if not self._may_act_as(post.author):
            return self._denied("partnerApiPostsExternal.DELETE")
        post.deleted = True  # deleting twice is fine: deletes are idempotent
        return Reply(204)

    def _initialize_upload(self, request):
        body = request.json if isinstance(request.json, dict) else {}
        owner = (body.get("initializeUploadRequest") or {}).get("owner", "")
        if not AUTHOR.fullmatch(owner or ""):
            return self.error(
                422, message="ERROR :: /initializeUploadRequest/owner :: invalid owner"
            )
        if not self._may_act_as(owner):
            return self._denied("partnerApiImages.ACTION-initializeUpload")
        number = next(self._ids)
        urn = f"urn:li:image:D4E10AQ{number}"
        path = f"/dms-uploads/{secrets.token_urlsafe(12)}"
        self.images[urn] = FakeImage(urn=urn, owner=owner, upload_path=path)
        base = self.upload_base or self.url
        return Reply(
            200,
            {
                "value": {
                    "uploadUrlExpiresAt": int(time.time() * 1000) + 86_400_000,
                    "uploadUrl": f"{base}{path}?ca=vector_feedshare&cn=uploads&sync=0&v=beta",
                    "image": urn,
                }
            },
        )

    def _upload(self, request):
        for image in self.images.values():
            if image.upload_path == request.path:
                if not request.body:
                    return self.error(400, message="Empty upload")
                image.data, image.headers = request.body, request.headers
                return Reply(201)
        return self.error(404, message="Unknown upload URL")
