"""LinkedIn: the Posts API, for member and organization authors; text, a link, one image.

Shapes, from LinkedIn's Community Management API documentation (versioned "rest" APIs):

- Every call: `Authorization: Bearer <token>`, `LinkedIn-Version: YYYYMM`,
  `X-Restli-Protocol-Version: 2.0.0`. A version LinkedIn no longer serves answers 426.
- Create: POST /rest/posts {author, commentary, visibility, distribution, lifecycleState,
  isReshareDisabledByAuthor, content?}; 201 with the post URN in the `x-restli-id` header.
  A link is `content.article {source, title}`; an image is `content.media {id: urn:li:image:…}`,
  uploaded first: POST /rest/images?action=initializeUpload {initializeUploadRequest: {owner}}
  → {value: {uploadUrl, image}}, then PUT of the bytes to uploadUrl.
- `commentary` is in LinkedIn's "little" text format: \\ | { } @ [ ] ( ) < > # * _ ~ are reserved
  and must be backslash-escaped, or LinkedIn silently cuts the post at the first one. Everything
  is escaped except a hashtag's '#', so what appears is exactly the approved text.
- Delete: DELETE /rest/posts/{url-encoded URN} → 204. Find by author:
  GET /rest/posts?q=author&author=<URN>&count=10&sortBy=LAST_MODIFIED → {elements: [...]}.
- Errors: {"status", "message", "code"?, "serviceErrorCode"?}; 401 expired or revoked token,
  403 not allowed to act as this author, 422 invalid content (including
  "Content is a duplicate of urn:li:share:…"), 429 throttled.
- Health: GET /v2/userinfo (OpenID Connect); 401 means the token no longer works.

Neither idempotency header nor client id exists on LinkedIn, so `find_delivery` looks for a
recent post of the author with exactly the approved commentary and link or image.
"""

import re
from urllib.parse import quote, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from .base import (
    Connector,
    Delivered,
    DeliveryError,
    Health,
    access_token,
    external_account_id,
)
from .http import error_for, request

NETWORK = "LinkedIn"
DEFAULT_VERSION = "202606"
AUTHOR = re.compile(r"urn:li:(person|organization):[A-Za-z0-9_-]{1,100}")
VERSION = re.compile(r"20\d\d(0[1-9]|1[0-2])")
POST_URN = re.compile(r"urn:li:(share|ugcPost):[0-9A-Za-z_-]{1,100}")
RESERVED = set("\\|{}@[]()<>#*_~")
HASHTAG = re.compile(r"(?<![\w#])#(?=[^\W_])")  # "#Lyon" stays a hashtag
ANY_STATUS = range(100, 600)
FIND_COUNT = 10


def little_text(text):
    """`text` in LinkedIn's little format: reserved characters escaped, hashtags kept."""
    hashtags = {match.start() for match in HASHTAG.finditer(text)}
    return "".join(
        "\\" + char if char in RESERVED and i not in hashtags else char
        for i, char in enumerate(text)
    )


def post_url(urn):
    return f"https://www.linkedin.com/feed/update/{urn}/"


class LinkedInConnector(Connector):
    network = "linkedin"
    label = "LinkedIn"
    max_length = 3000  # commentary characters

    def clean_settings(self, config):
        author = str(config.get("author") or "").strip()
        if author and not AUTHOR.fullmatch(author):
            raise ValidationError(
                "settings.author must be the LinkedIn author URN: 'urn:li:organization:<id>' "
                f"for a company page, 'urn:li:person:<id>' for a member; not {author!r}. "
                "Leave it empty to post as the member who connected the account."
            )
        version = str(config.get("version") or DEFAULT_VERSION).strip()
        if not VERSION.fullmatch(version):
            raise ValidationError(
                "settings.version must be a LinkedIn API version as YYYYMM "
                f"(for example {DEFAULT_VERSION}); not {version!r}."
            )
        return {**config, "author": author, "version": version}

    # Publishing
    def publish(self, account, content, idempotency_key):
        author, token = self._author(account), access_token(account)
        commentary = content.text
        body = {
            "author": author,
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        if content.image_path:
            # A post carries an article or an image, not both: the link goes in the text.
            if content.link:
                commentary = f"{commentary}\n{content.link}"
            image = self._upload_image(account, token, author, content)
            body["content"] = {"media": {"id": image}}
        elif content.link:
            title = urlsplit(content.link).hostname or content.link
            body["content"] = {"article": {"source": content.link, "title": title}}
        body["commentary"] = little_text(commentary)
        response = self._call(account, token, "POST", "/rest/posts", json=body, ok=(201,))
        urn = response.headers.get("x-restli-id", "")
        if not POST_URN.fullmatch(urn):
            raise DeliveryError(
                f"{NETWORK} accepted the post but did not say its id ({urn[:100]!r}); "
                "check the page before retrying",
                permanent=True,
            )
        return Delivered(external_id=urn, url=post_url(urn))

    def _upload_image(self, account, token, author, content):
        data = content.image_bytes()
        answer = self._call(
            account,
            token,
            "POST",
            "/rest/images",
            params={"action": "initializeUpload"},
            json={"initializeUploadRequest": {"owner": author}},
            ok=(200,),
        )
        try:
            value = answer.json()["value"]
            upload_url, image = str(value["uploadUrl"]), str(value["image"])
        except (ValueError, KeyError, TypeError):
            raise DeliveryError(f"{NETWORK} did not give an image upload address") from None
        # The token goes with the bytes: only to LinkedIn itself (or the configured API host).
        host = urlsplit(upload_url).hostname or ""
        api_host = urlsplit(self._base()).hostname
        if not (host == api_host or host == "linkedin.com" or host.endswith(".linkedin.com")):
            raise DeliveryError(
                f"{NETWORK} gave an upload address outside LinkedIn ({host}); refused",
                permanent=True,
            )
        self._call(
            account,
            token,
            "PUT",
            upload_url,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            ok=(200, 201),
        )
        return image

    def retract(self, account, external_id):
        if not POST_URN.fullmatch(external_id or ""):
            raise DeliveryError(f"{external_id!r} is not a LinkedIn post URN", permanent=True)
        token = access_token(account)
        self._call(
            account,
            token,
            "DELETE",
            f"/rest/posts/{quote(external_id, safe='')}",
            headers={"X-RestLi-Method": "DELETE"},
            ok=(200, 204, 404),  # 404: already gone from LinkedIn
        )

    def find_delivery(self, account, idempotency_key, content):
        """The author's recent post with exactly this content, if LinkedIn lets us read them.

        Raises DeliveryError when LinkedIn cannot answer now (try later); None when no such post
        is there, or when the token may not read the author's posts (cannot tell).
        """
        author, token = self._author(account), access_token(account)
        response = self._call(
            account,
            token,
            "GET",
            "/rest/posts",
            params={
                "q": "author",
                "author": author,
                "count": FIND_COUNT,
                "sortBy": "LAST_MODIFIED",
            },
            headers={"X-RestLi-Method": "FINDER"},
            ok=(200, 403),
        )
        if response.status_code == 403:
            return None
        try:
            elements = response.json().get("elements") or []
        except (ValueError, AttributeError):
            return None
        commentary = content.text
        if content.image_path and content.link:
            commentary = f"{commentary}\n{content.link}"
        for element in elements:
            if not isinstance(element, dict) or element.get("lifecycleState") != "PUBLISHED":
                continue
            if element.get("commentary") != little_text(commentary):
                continue
            posted = element.get("content") or {}
            if content.image_path:
                matches = "media" in posted
            elif content.link:
                matches = (posted.get("article") or {}).get("source") == content.link
            else:
                matches = not posted
            urn = str(element.get("id") or "")
            if matches and POST_URN.fullmatch(urn):
                return Delivered(external_id=urn, url=post_url(urn))
        return None

    def health(self, account):
        try:
            token = access_token(account)
            response = self._call(account, token, "GET", "/v2/userinfo", ok=(200, 403))
        except DeliveryError as error:
            return Health(ok=False, detail=str(error), reconnect=error.reconnect)
        if response.status_code == 403:
            # Authenticated (an unusable token is a 401) but without the openid scope.
            return Health(ok=True, detail=f"{NETWORK} accepts the token")
        try:
            name = response.json().get("name") or ""
        except (ValueError, AttributeError):
            name = ""
        return Health(
            ok=True, detail=f"{NETWORK} accepts the token" + (f" of {name}" if name else "")
        )

    # Calls
    def _author(self, account):
        author = (account.settings or {}).get("author") or external_account_id(account)
        if not AUTHOR.fullmatch(author or ""):
            raise DeliveryError(
                "the account has no LinkedIn author (settings.author: urn:li:organization:<id> "
                "or urn:li:person:<id>)",
                permanent=True,
            )
        return author

    @staticmethod
    def _base():
        return settings.REVIEWFLOW["API_BASE_URLS"]["linkedin"].rstrip("/")

    def _call(self, account, token, method, path, *, ok, headers=None, **kwargs):
        version = (account.settings or {}).get("version") or DEFAULT_VERSION
        url = path if path.startswith(("http://", "https://")) else self._base() + path
        all_headers = {
            "Authorization": f"Bearer {token}",
            "LinkedIn-Version": version,
            "X-Restli-Protocol-Version": "2.0.0",
            **(headers or {}),
        }
        response = request(
            method, url, network=NETWORK, expected=ANY_STATUS, headers=all_headers, **kwargs
        )
        if response.status_code in ok:
            return response
        raise self._error(response, account, version)

    def _error(self, response, account, version):
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {}
        message = str(body.get("message") or "") if isinstance(body, dict) else ""
        if status == 403:
            try:
                who = self._author(account)
            except DeliveryError:
                who = "this author"
            return DeliveryError(
                f"{NETWORK} does not let this token act as {who}: the member "
                "must be an administrator of the company page, and the app needs the "
                f"w_organization_social or w_member_social permission. {message}".strip(),
                permanent=True,
            )
        if status == 422 and "duplicate" in message.lower():
            earlier = re.search(r"urn:li:\w+:[\w-]+", message)
            return DeliveryError(
                f"{NETWORK} refused the post as a duplicate of an earlier post with the same "
                f"text{f' ({earlier.group()})' if earlier else ''}",
                permanent=True,
            )
        if status == 426:
            return DeliveryError(
                f"{NETWORK} no longer serves API version {version}: set a current version "
                "(YYYYMM) in the account's settings",
                permanent=True,
            )
        return error_for(response, NETWORK)
