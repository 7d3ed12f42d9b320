"""OAuth 2.0 authorization-code flow for the networks that offer it (LinkedIn, X, Facebook).

Each network's endpoints and scopes are below. The app registered with the network gives a client
id and secret, read from the environment at each use: REVIEWFLOW_<NETWORK>_CLIENT_ID and
REVIEWFLOW_<NETWORK>_CLIENT_SECRET (e.g. REVIEWFLOW_LINKEDIN_CLIENT_ID). The redirect URI to
register with the network is REVIEWFLOW["BASE_URL"] + the admin's OAuth callback path (the admin's
Connect page shows it).

Endpoints are the networks' own; REVIEWFLOW["OAUTH_URLS"] overrides them per network
({"linkedin": {"authorize": ..., "token": ...}}), so tests and self-hosted setups can point
elsewhere. Token URLs on a network's API host (X, Facebook) follow REVIEWFLOW["API_BASE_URLS"].

Mastodon is not here: each instance needs its own app registration, so its token is entered by
hand on the Connect page (Preferences > Development > New application, scope write:statuses
write:media read:accounts).

Every call goes through connectors.http.request: SSRF guard, TLS verification, timeout.
"""

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass, field, replace
from datetime import timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.utils import timezone

from .connectors import http
from .connectors.base import DeliveryError

FACEBOOK_GRAPH_VERSION = "v23.0"  # as connectors/facebook.py DEFAULT_VERSION
ALL_STATUSES = tuple(range(100, 600))  # read every answer here; refusals are said below


class OAuthError(Exception):
    """The network refused, or could not be reached: said in plain words, nothing stored."""

    def __init__(self, message, *, unreachable=False):
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str = ""
    expires_at: object = None  # datetime, or None when the token does not expire
    scope: str = ""
    external_account_id: str = ""


@dataclass(frozen=True)
class Provider:
    network: str
    label: str
    authorize_url: str
    token_url: str  # "{api}" is replaced by the network's API base URL
    scopes: tuple = ()
    scope_separator: str = " "
    pkce: bool = False
    basic_auth: bool = False  # the client authenticates at the token URL with HTTP Basic
    refreshable: bool = True
    extra_authorize_params: dict = field(default_factory=dict)

    # --- configuration -----------------------------------------------------------------------

    def _env(self, what):
        return os.environ.get(f"REVIEWFLOW_{self.network.upper()}_CLIENT_{what}", "").strip()

    @property
    def client_id(self):
        return self._env("ID")

    @property
    def client_secret(self):
        return self._env("SECRET")

    @property
    def configured(self):
        return bool(self.client_id and self.client_secret)

    def _url(self, which):
        override = settings.REVIEWFLOW.get("OAUTH_URLS", {}).get(self.network, {}).get(which)
        if override:
            return override
        template = self.authorize_url if which == "authorize" else self.token_url
        api = settings.REVIEWFLOW["API_BASE_URLS"].get(self.network, "").rstrip("/")
        return template.replace("{api}", api)

    @property
    def authorization_endpoint(self):
        return self._url("authorize")

    @property
    def token_endpoint(self):
        return self._url("token")

    def scopes_for(self, external_account_id=""):
        scopes = list(self.scopes)
        if self.network == "linkedin" and external_account_id.startswith("urn:li:organization:"):
            scopes += ["w_organization_social", "r_organization_social"]
        return scopes

    # --- the flow ----------------------------------------------------------------------------

    def authorization_url(self, *, redirect_uri, state, code_verifier="", external_account_id=""):
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scope_separator.join(self.scopes_for(external_account_id)),
            "state": state,
            **self.extra_authorize_params,
        }
        if self.pkce:
            params["code_challenge"] = code_challenge(code_verifier)
            params["code_challenge_method"] = "S256"
        return f"{self.authorization_endpoint}?{urlencode(params)}"

    def exchange_code(self, code, *, redirect_uri, code_verifier=""):
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if self.pkce:
            data["code_verifier"] = code_verifier
        return self._token_call(data, "refused the authorization code")

    def refresh(self, refresh_token):
        if not (self.refreshable and refresh_token):
            raise OAuthError(f"{self.label} tokens cannot be refreshed: reconnect the account")
        tokens = self._token_call(
            {"grant_type": "refresh_token", "refresh_token": refresh_token},
            "refused to refresh the token",
        )
        if not tokens.refresh_token:  # LinkedIn keeps the same refresh token
            tokens = replace(tokens, refresh_token=refresh_token)
        return tokens

    def complete(self, tokens, external_account_id=""):
        """What the network needs beyond the token exchange; returns the tokens to store."""
        return replace(tokens, external_account_id=external_account_id.strip())

    # --- calls -------------------------------------------------------------------------------

    def _token_call(self, data, refused):
        auth = None
        if self.basic_auth:
            auth = (self.client_id, self.client_secret)
            data = {**data, "client_id": self.client_id}
        else:
            data = {**data, "client_id": self.client_id, "client_secret": self.client_secret}
        body = self._call("POST", self.token_endpoint, refused, data=data, auth=auth)
        return tokens_from(body, self.label)

    def _call(self, method, url, refused, **kwargs):
        headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
        try:
            response = http.request(
                method, url, network=self.label, expected=ALL_STATUSES, headers=headers, **kwargs
            )
        except DeliveryError as error:
            raise OAuthError(f"{error}", unreachable=not error.permanent) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict):
            raise OAuthError(
                f"{self.label} {refused} (HTTP {response.status_code}): "
                f"{error_text(body, response.text)}"
            )
        return body


def tokens_from(body, label):
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise OAuthError(f"{label} answered without an access token: {error_text(body, '')}")
    try:
        expires_in = int(float(body.get("expires_in")))
    except (TypeError, ValueError, OverflowError):
        expires_in = None  # not said: the token does not expire (or we cannot tell)
    expires_at = timezone.now() + timedelta(seconds=expires_in) if expires_in else None
    return Tokens(
        access_token=token,
        refresh_token=str(body.get("refresh_token") or ""),
        expires_at=expires_at,
        scope=str(body.get("scope") or ""),
    )


def error_text(body, text):
    """The reason a network gives, from an OAuth error body (RFC 6749 §5.2) or its text."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # Facebook: {"error": {"message": ...}}
            return str(error.get("message") or error)[:300]
        description = body.get("error_description") or body.get("message")
        if error and description:
            return f"{description} ({error})"[:300]
        if error or description:
            return str(error or description)[:300]
    return (text or "no reason given").strip()[:300]


class LinkedInProvider(Provider):
    def complete(self, tokens, external_account_id=""):
        """Without an author URN given, the member's own: urn:li:person:<OpenID sub>."""
        tokens = super().complete(tokens, external_account_id)
        if tokens.external_account_id:
            return tokens
        api = settings.REVIEWFLOW["API_BASE_URLS"]["linkedin"].rstrip("/")
        try:
            body = self._call(
                "GET",
                f"{api}/v2/userinfo",
                "did not say whose token this is",
                headers={"Authorization": f"Bearer {tokens.access_token}"},
            )
        except OAuthError:
            return tokens  # the health check says what is wrong; the admin may enter the URN
        sub = str(body.get("sub") or "")
        return replace(tokens, external_account_id=f"urn:li:person:{sub}" if sub else "")


class FacebookProvider(Provider):
    """Facebook returns a user token; a Page publishes with its own Page token.

    The code gives a short-lived user token, exchanged for a long-lived one, from which the Page
    token is read (/me/accounts). A Page token obtained this way does not expire.
    """

    def exchange_code(self, code, *, redirect_uri, code_verifier=""):
        short = self._get_token({"code": code, "redirect_uri": redirect_uri})
        return self._get_token(
            {"grant_type": "fb_exchange_token", "fb_exchange_token": short.access_token}
        )

    def _get_token(self, params):
        params = {**params, "client_id": self.client_id, "client_secret": self.client_secret}
        body = self._call("GET", self.token_endpoint, "refused the code", params=params)
        return tokens_from(body, self.label)

    def complete(self, tokens, external_account_id=""):
        page_id = external_account_id.strip()
        api = settings.REVIEWFLOW["API_BASE_URLS"]["facebook"].rstrip("/")
        body = self._call(
            "GET",
            f"{api}/{FACEBOOK_GRAPH_VERSION}/me/accounts",
            "did not list the Pages this user manages",
            params={"fields": "id,name,access_token", "access_token": tokens.access_token},
        )
        pages = [page for page in body.get("data") or [] if isinstance(page, dict)]
        chosen = [page for page in pages if str(page.get("id")) == page_id] if page_id else pages
        if len(chosen) != 1 or not chosen[0].get("access_token"):
            listed = ", ".join(f"{page.get('name')} ({page.get('id')})" for page in pages)
            if page_id:
                reason = f"the Page {page_id} is not among the Pages this user manages"
            elif pages:
                reason = "this user manages several Pages: enter the Page id to connect"
            else:
                reason = "this user manages no Page (or did not grant access to one)"
            raise OAuthError(f"Facebook: {reason}. Pages: {listed or 'none'}.")
        page = chosen[0]
        return Tokens(
            access_token=str(page["access_token"]),
            external_account_id=str(page["id"]),
            scope=tokens.scope,
        )


PROVIDERS = {
    # https://learn.microsoft.com/linkedin/shared/authentication/authorization-code-flow
    "linkedin": LinkedInProvider(
        network="linkedin",
        label="LinkedIn",
        authorize_url="https://www.linkedin.com/oauth/v2/authorization",
        token_url="https://www.linkedin.com/oauth/v2/accessToken",
        scopes=("openid", "profile", "w_member_social"),
    ),
    # https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/authorization-code
    "x": Provider(
        network="x",
        label="X",
        authorize_url="https://x.com/i/oauth2/authorize",
        token_url="{api}/2/oauth2/token",
        scopes=("tweet.read", "tweet.write", "users.read", "media.write", "offline.access"),
        pkce=True,
        basic_auth=True,
    ),
    # https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow
    "facebook": FacebookProvider(
        network="facebook",
        label="Facebook",
        authorize_url=f"https://www.facebook.com/{FACEBOOK_GRAPH_VERSION}/dialog/oauth",
        token_url=f"{{api}}/{FACEBOOK_GRAPH_VERSION}/oauth/access_token",
        scopes=("pages_show_list", "pages_read_engagement", "pages_manage_posts"),
        scope_separator=",",
        refreshable=False,
    ),
}


def provider_for(network):
    """The network's OAuth provider, or None when its tokens are entered by hand."""
    return PROVIDERS.get(network)


def new_state():
    return secrets.token_urlsafe(32)


def new_code_verifier():
    """RFC 7636: 43 to 128 characters of [A-Za-z0-9-._~]."""
    return secrets.token_urlsafe(64)[:96]


def code_challenge(verifier):
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
