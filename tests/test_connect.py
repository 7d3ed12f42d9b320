"""Connecting an account: OAuth against a local fake network, token entry, health checks.

The fake network is a real HTTP server on loopback answering as the networks' OAuth token
endpoints do (RFC 6749 authorization-code and refresh grants, RFC 7636 PKCE for X, Facebook's
code -> long-lived token -> Page token) and, for every other GET, as their "who am I" endpoints,
with a 401 for a token it did not issue or revoked. No mocked HTTP client.
"""

import base64
import hashlib
import json
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals import health, oauth, tasks
from approvals.models import AccountCredential, LedgerEntry, Notification, SocialAccount
from approvals.views.connect import SESSION_KEY
from tests.localserver import LocalServer

pytestmark = pytest.mark.django_db

CALLBACK = "/admin/approvals/socialaccount/oauth/callback/"
GOOD_CODE = "code-from-the-network"


class FakeNetwork(LocalServer):
    """One server for every network: token endpoints by path, 'who am I' for any other GET."""

    def __init__(self):
        self.requests = []  # (method, path, form/query dict, headers dict)
        self.valid_tokens = set()
        self.refresh_tokens = set()
        self.challenge = None  # the PKCE challenge the authorize step received
        self.expires_in = 60 * 86400  # LinkedIn's 60 days; X's two hours are set by its tests
        self.pages = [{"id": "555", "name": "Agence Lyon"}]
        self._count = 0
        super().__init__()

    @property
    def base(self):
        return self.base_url

    def revoke_all(self):
        self.valid_tokens.clear()

    def token_requests(self):
        ends = ("/accessToken", "/oauth2/token", "/oauth/access_token")
        return [r for r in self.requests if r[1].endswith(ends)]

    def _issue(self, refresh=True):
        with self._lock:
            self._count += 1
            access, refresh_token = f"at-{self._count}-secret", f"rt-{self._count}-secret"
        self.valid_tokens.add(access)
        answer = {"access_token": access, "token_type": "bearer", "expires_in": self.expires_in}
        if refresh:
            self.refresh_tokens.add(refresh_token)
            answer["refresh_token"] = refresh_token
        return answer

    def _token(self, form, headers):
        grant = form.get("grant_type")
        if grant == "authorization_code":
            if form.get("code") != GOOD_CODE or not form.get("redirect_uri"):
                return 400, {"error": "invalid_grant", "error_description": "bad code"}
            if self.challenge is not None:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != self.challenge:
                    return 400, {
                        "error": "invalid_request",
                        "error_description": "Value passed for the code verifier did not "
                        "match the code challenge.",
                    }
            return 200, self._issue()
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant", "error_description": "revoked"}
            self.refresh_tokens.discard(form["refresh_token"])  # rotated, as X does
            return 200, self._issue()
        return 400, {"error": "unsupported_grant_type"}

    def _facebook_token(self, query):
        if query.get("grant_type") == "fb_exchange_token":
            if query.get("fb_exchange_token") not in self.valid_tokens:
                return 400, {"error": {"message": "Invalid OAuth access token.", "code": 190}}
            return 200, self._issue(refresh=False)
        if query.get("code") != GOOD_CODE:
            return 400, {"error": {"message": "Invalid verification code format.", "code": 100}}
        return 200, self._issue(refresh=False)

    def _handler_class(self):
        network = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                fields = {k: v[0] for k, v in parse_qs(parts.query).items()}
                fields.update({k: v[0] for k, v in parse_qs(raw).items()})
                headers = {k.lower(): v for k, v in self.headers.items()}
                network.requests.append((self.command, parts.path, fields, headers))
                return parts.path, fields, headers

            def do_POST(self):
                path, form, headers = self._record()
                if path.endswith(("/accessToken", "/oauth2/token")):
                    return self._reply(*network._token(form, headers))
                self._reply(404, {"error": "not found"})

            def do_GET(self):
                path, query, headers = self._record()
                if path.endswith("/oauth/access_token"):
                    return self._reply(*network._facebook_token(query))
                token = headers.get("authorization", "").removeprefix("Bearer ")
                token = token or query.get("access_token", "")
                if token not in network.valid_tokens:
                    return self._reply(
                        401, {"message": "Invalid access token", "error": "invalid_token"}
                    )
                if path.endswith("/me/accounts"):
                    pages = [
                        {**page, "access_token": "page-token-secret"} for page in network.pages
                    ]
                    network.valid_tokens.add("page-token-secret")
                    return self._reply(200, {"data": pages})
                self._reply(
                    200,
                    {  # what LinkedIn's userinfo, X's users/me, Graph's /me, Mastodon's
                        # verify_credentials answer, together
                        "sub": "member-1",
                        "name": "Alice Martin",
                        "id": "555",
                        "acct": "alice",
                        "username": "alice",
                        "data": {"id": "42", "username": "alice"},
                    },
                )

        return Handler


@pytest.fixture
def fake():
    with FakeNetwork() as network:
        yield network


@pytest.fixture
def networks(fake, settings, monkeypatch):
    """Every network's API and OAuth endpoints on the fake; the apps' client ids set."""
    settings.REVIEWFLOW = {
        **settings.REVIEWFLOW,
        "API_BASE_URLS": {
            **settings.REVIEWFLOW["API_BASE_URLS"],
            "linkedin": fake.base,
            "x": fake.base,
            "facebook": fake.base,
        },
        "OAUTH_URLS": {
            "linkedin": {
                "authorize": f"{fake.base}/oauth/v2/authorization",
                "token": f"{fake.base}/oauth/v2/accessToken",
            },
            "x": {"authorize": f"{fake.base}/i/oauth2/authorize"},
            "facebook": {"authorize": f"{fake.base}/dialog/oauth"},
        },
        "BASE_URL": "https://reviewflow.example.com",
    }
    for network in ("LINKEDIN", "X", "FACEBOOK"):
        monkeypatch.setenv(f"REVIEWFLOW_{network}_CLIENT_ID", f"{network.lower()}-client")
        monkeypatch.setenv(f"REVIEWFLOW_{network}_CLIENT_SECRET", f"{network.lower()}-app-secret")
    return fake


def make_account(world, network, **extra):
    return SocialAccount.objects.create(
        team=world.lyon,
        network=network,
        name=f"Lyon on {network}",
        handle="@lyon",
        validated=True,
        **extra,
    )


def connect_url(account):
    return reverse("admin:approvals_socialaccount_connect", args=[account.pk])


def start(client, account, **fields):
    response = client.post(
        connect_url(account),
        {"action": "oauth", **{f"oauth-{k}": v for k, v in fields.items()}},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    location = urlsplit(response["Location"])
    return location, {k: v[0] for k, v in parse_qs(location.query).items()}


def raw_columns(credential):
    return " ".join(
        str(value)
        for value in AccountCredential.objects.filter(pk=credential.pk).values().get().values()
    )


# --- OAuth ----------------------------------------------------------------------------------------


def test_linkedin_authorize_redirect_carries_state_client_redirect_uri_and_scope(
    client, world, networks
):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    location, params = start(client, account)
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"{networks.base}/oauth/v2/authorization"
    )
    assert params["response_type"] == "code"
    assert params["client_id"] == "linkedin-client"
    assert params["redirect_uri"] == f"https://reviewflow.example.com{CALLBACK}"
    assert params["scope"] == "openid profile w_member_social"
    assert len(params["state"]) >= 32
    assert params["state"] in client.session[SESSION_KEY]
    assert "code_challenge" not in params  # LinkedIn: a confidential client, no PKCE
    assert "linkedin-app-secret" not in str(params)


def test_linkedin_organization_asks_for_the_organization_scopes(client, world, networks):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account, external_account_id="urn:li:organization:2414183")
    assert params["scope"].split() == [
        "openid",
        "profile",
        "w_member_social",
        "w_organization_social",
        "r_organization_social",
    ]


def test_linkedin_flow_end_to_end_stores_the_token_encrypted_and_checks_it(client, world, networks):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account)

    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})

    assert response.status_code == 302 and response["Location"] == connect_url(account)
    [exchange] = networks.token_requests()
    method, _, form, _ = exchange
    assert method == "POST"
    assert form == {
        "grant_type": "authorization_code",
        "code": GOOD_CODE,
        "redirect_uri": f"https://reviewflow.example.com{CALLBACK}",
        "client_id": "linkedin-client",
        "client_secret": "linkedin-app-secret",
    }
    credential = AccountCredential.objects.get(account=account)
    assert credential.access_token == "at-1-secret"
    assert credential.refresh_token == "rt-1-secret"
    assert "secret" not in raw_columns(credential).replace("_encrypted", "")
    expected_expiry = timezone.now() + timedelta(days=60)
    assert abs((credential.expires_at - expected_expiry).total_seconds()) < 30
    assert credential.external_account_id == "urn:li:person:member-1"  # from /v2/userinfo
    # The health check ran, with the LinkedIn connector, against the network.
    assert credential.status == AccountCredential.Status.OK
    assert credential.checked_at is not None
    assert "Alice Martin" in credential.status_detail
    page = client.get(connect_url(account)).content.decode()
    assert "Connected with LinkedIn. The network accepts the token" in page
    assert "at-1-secret" not in page and "rt-1-secret" not in page
    events = list(LedgerEntry.objects.order_by("seq").values_list("event", "payload"))
    stored = [payload for event, payload in events if event == "admin.accountcredential.set"]
    assert stored and stored[0]["via"] == "oauth" and stored[0]["refresh_token"] is True
    assert "secret" not in json.dumps(events)
    assert ("credential.status_changed") in [event for event, _ in events]


def test_callback_with_a_wrong_state_is_refused_and_stores_nothing(client, world, networks):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account)

    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": "forged-" + params["state"]})

    assert response.status_code == 400
    assert "state mismatch" in response.content.decode()
    assert "Nothing was stored" in response.content.decode()
    assert not AccountCredential.objects.exists()
    assert networks.token_requests() == []  # the code was never spent


def test_a_state_is_used_once(client, world, networks):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account)
    assert client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]}).status_code == 302
    again = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})
    assert again.status_code == 400 and "state mismatch" in again.content.decode()
    assert len(networks.token_requests()) == 1


def test_a_state_started_by_someone_else_is_refused(client, world, networks, django_user_model):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account)
    other = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(other)  # a different session: the state is not in it
    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})
    assert response.status_code == 400
    assert not AccountCredential.objects.exists()


def test_the_network_refusing_access_is_said_and_nothing_stored(client, world, networks):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account)
    response = client.get(
        CALLBACK,
        {
            "error": "user_cancelled_authorize",
            "error_description": "The user cancelled the authorization",
            "state": params["state"],
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "LinkedIn did not grant access: The user cancelled the authorization" in page
    assert not AccountCredential.objects.exists()


def test_a_refused_code_is_said_and_nothing_stored(client, world, networks):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account)
    response = client.get(CALLBACK, {"code": "stale-code", "state": params["state"]})
    assert response.status_code == 400
    assert (
        "LinkedIn refused the authorization code (HTTP 400): bad code (invalid_grant)"
        in response.content.decode()
    )
    assert not AccountCredential.objects.exists()


def test_an_unreachable_token_endpoint_is_a_502_and_nothing_stored(
    client, world, networks, settings
):
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    _, params = start(client, account)
    networks.stop()
    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})
    assert response.status_code == 502
    assert "could not reach LinkedIn" in response.content.decode()
    assert not AccountCredential.objects.exists()


def test_x_uses_pkce_and_basic_client_authentication(client, world, networks):
    networks.expires_in = 7200
    account = make_account(world, "x")
    client.force_login(world.carla)
    location, params = start(client, account)
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url of a SHA-256, unpadded
    assert "offline.access" in params["scope"].split()  # for a refresh token
    assert "tweet.write" in params["scope"].split()
    networks.challenge = params["code_challenge"]

    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})

    assert response.status_code == 302
    [(_, path, form, headers)] = networks.token_requests()
    assert path == "/2/oauth2/token"
    expected_auth = base64.b64encode(b"x-client:x-app-secret").decode()
    assert headers["authorization"] == f"Basic {expected_auth}"
    assert 43 <= len(form["code_verifier"]) <= 128
    assert "client_secret" not in form
    credential = AccountCredential.objects.get(account=account)
    assert credential.access_token == "at-1-secret"
    assert credential.status == AccountCredential.Status.OK
    assert "@alice" in credential.status_detail


def test_x_with_a_wrong_verifier_is_refused(client, world, networks):
    account = make_account(world, "x")
    client.force_login(world.carla)
    _, params = start(client, account)
    networks.challenge = "not-the-challenge-we-were-sent"
    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})
    assert response.status_code == 400
    assert "did not match the code challenge" in response.content.decode()
    assert not AccountCredential.objects.exists()


def test_facebook_stores_the_page_token_of_the_page(client, world, networks):
    account = make_account(world, "facebook")
    client.force_login(world.carla)
    _, params = start(client, account, external_account_id="555")
    assert params["scope"] == "pages_show_list,pages_read_engagement,pages_manage_posts"

    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})

    assert response.status_code == 302
    exchanges = [r[2] for r in networks.token_requests()]
    assert exchanges[0]["code"] == GOOD_CODE
    assert exchanges[1]["grant_type"] == "fb_exchange_token"  # the long-lived user token
    credential = AccountCredential.objects.get(account=account)
    assert credential.access_token == "page-token-secret"
    assert credential.external_account_id == "555"
    assert credential.expires_at is None  # a Page token from a long-lived token does not expire
    assert credential.status == AccountCredential.Status.OK


def test_facebook_page_not_managed_is_refused(client, world, networks):
    account = make_account(world, "facebook")
    client.force_login(world.carla)
    _, params = start(client, account, external_account_id="999")
    response = client.get(CALLBACK, {"code": GOOD_CODE, "state": params["state"]})
    assert response.status_code == 400
    assert "the Page 999 is not among the Pages this user manages" in response.content.decode()
    assert not AccountCredential.objects.exists()


def test_without_the_app_credentials_the_page_says_what_to_set(
    client, world, networks, monkeypatch
):
    monkeypatch.delenv("REVIEWFLOW_LINKEDIN_CLIENT_ID")
    account = make_account(world, "linkedin")
    client.force_login(world.carla)
    page = client.get(connect_url(account)).content.decode()
    assert "set REVIEWFLOW_LINKEDIN_CLIENT_ID and REVIEWFLOW_LINKEDIN_CLIENT_SECRET" in page
    assert 'value="Connect with LinkedIn"' not in page
    response = client.post(connect_url(account), {"action": "oauth"})
    assert response.status_code == 400


def test_only_admins_who_may_change_accounts_connect(client, world, networks):
    account = make_account(world, "linkedin")
    for user in (world.alice, world.rita):
        client.force_login(user)
        response = client.get(connect_url(account))
        assert response.status_code == 302  # the admin's login: not staff
    world.rita.is_staff = True
    world.rita.save()
    client.force_login(world.rita)
    assert client.get(connect_url(account)).status_code == 403
    assert client.get(CALLBACK, {"code": GOOD_CODE, "state": "x"}).status_code == 403


# --- Token entry ----------------------------------------------------------------------------------


def test_mastodon_token_entry_stores_it_encrypted_and_checks_it(client, world, networks):
    account = make_account(world, "mastodon", settings={"instance": networks.base})
    networks.valid_tokens.add("mastodon-token-secret")
    client.force_login(world.carla)
    page = client.get(connect_url(account)).content.decode()
    assert "Connect with" not in page  # no OAuth: an app per instance
    assert 'type="password"' in page and "Preferences › Development" in page

    response = client.post(
        connect_url(account),
        {"action": "token", "token-access_token": "mastodon-token-secret"},
        follow=True,
    )

    page = response.content.decode()
    assert "Token stored. The network accepts the token (connected as @alice@127.0.0.1)" in page
    assert "mastodon-token-secret" not in page
    credential = AccountCredential.objects.get(account=account)
    assert credential.access_token == "mastodon-token-secret"
    assert credential.status == AccountCredential.Status.OK
    assert networks.requests[-1][1] == "/api/v1/accounts/verify_credentials"
    entry = LedgerEntry.objects.get(event="admin.accountcredential.set")
    assert entry.payload["via"] == "token entry" and entry.actor == "carla"


def test_a_refused_token_is_reconnect_needed_at_once(client, world, networks, mailoutbox):
    account = make_account(world, "mastodon", settings={"instance": networks.base})
    client.force_login(world.carla)
    response = client.post(
        connect_url(account),
        {"action": "token", "token-access_token": "typo-token"},
        follow=True,
    )
    assert "Reconnect needed" in response.content.decode()
    credential = AccountCredential.objects.get(account=account)
    assert credential.status == AccountCredential.Status.RECONNECT
    assert "refused the access token" in credential.status_detail


def test_check_now_and_disconnect(client, world, networks):
    account = make_account(world, "mastodon", settings={"instance": networks.base})
    networks.valid_tokens.add("tok-secret")
    health.save_credential(
        account, oauth.Tokens(access_token="tok-secret"), actor=world.carla, via="token entry"
    )
    client.force_login(world.carla)
    response = client.post(connect_url(account), {"action": "check"}, follow=True)
    assert "The network accepts the token" in response.content.decode()
    response = client.post(connect_url(account), {"action": "disconnect"}, follow=True)
    assert "The credential is removed" in response.content.decode()
    assert not AccountCredential.objects.filter(account=account).exists()
    removed = LedgerEntry.objects.get(event="admin.accountcredential.removed")
    assert removed.payload["what"] == "credential removed" and removed.actor == "carla"


# --- Health ---------------------------------------------------------------------------------------


def connected(world, network, fake, **extra):
    account = make_account(world, network, **extra)
    token = f"{network}-token-secret"
    fake.valid_tokens.add(token)
    health.save_credential(
        account, oauth.Tokens(access_token=token), actor=world.carla, via="token entry"
    )
    health.check_account(account)
    return account


def test_health_beat_marks_a_revoked_token_and_tells_the_owner_and_admins_once(
    world, networks, mailoutbox, django_capture_on_commit_callbacks
):
    firm = connected(world, "linkedin", networks, settings={"author": "urn:li:organization:1"})
    paris = SocialAccount.objects.create(
        team=world.paris, network="sandbox", name="Paris sandbox", validated=True
    )
    assert AccountCredential.objects.get(account=firm).status == AccountCredential.Status.OK
    networks.revoke_all()  # the member revoked the app at LinkedIn

    with django_capture_on_commit_callbacks(execute=True):
        tasks.check_account_credentials.delay()

    credential = AccountCredential.objects.get(account=firm)
    assert credential.status == AccountCredential.Status.RECONNECT
    assert "refused the access token (expired or revoked)" in credential.status_detail
    change = LedgerEntry.objects.filter(event="credential.status_changed").last()
    assert change.payload["before"] == "ok" and change.payload["after"] == "reconnect"
    assert change.actor == "system"
    # A firm account: the team's advisors (alice, not bruno of Paris) and the compliance admin.
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.com", "carla@example.com"]
    mail = mailoutbox[0]
    assert mail.subject == "Reconnect needed: Lyon on linkedin on linkedin"
    assert "cannot publish until it is reconnected" in mail.body
    assert f"https://reviewflow.example.com{connect_url(firm)}" in mail.body
    assert Notification.objects.filter(kind=Notification.Kind.RECONNECT_NEEDED).count() == 2
    assert paris.pk  # an account without credential is not checked

    mailoutbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        tasks.check_account_credentials.delay()
    assert mailoutbox == []  # still broken: no new status, no new mail


def test_personal_account_tells_its_owner(
    world, networks, mailoutbox, django_capture_on_commit_callbacks
):
    own = connected(world, "x", networks, owner=world.alice)
    networks.revoke_all()
    with django_capture_on_commit_callbacks(execute=True):
        health.check_all()
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@example.com", "carla@example.com"]
    assert AccountCredential.objects.get(account=own).status == AccountCredential.Status.RECONNECT


def test_a_token_expiring_within_a_day_without_refresh_needs_reconnecting(world, networks):
    account = connected(world, "mastodon", networks, settings={"instance": networks.base})
    AccountCredential.objects.filter(account=account).update(
        expires_at=timezone.now() + timedelta(hours=20)
    )
    credential = health.check_account(account)
    assert credential.status == AccountCredential.Status.RECONNECT
    assert credential.status_detail.startswith("The access token expires ")
    AccountCredential.objects.filter(account=account).update(
        expires_at=timezone.now() - timedelta(hours=1)
    )
    assert "expired" in health.check_account(account).status_detail


def test_an_expired_token_is_refreshed_by_the_check(world, networks):
    networks.expires_in = 7200  # X tokens last two hours; the check runs every six
    account = make_account(world, "x")
    tokens = networks._issue()
    health.save_credential(
        account,
        oauth.Tokens(
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            expires_at=timezone.now() + timedelta(hours=1),
        ),
        actor=None,
        via="oauth",
    )
    assert health.check_account(account).status == AccountCredential.Status.OK
    assert networks.token_requests() == []  # valid for an hour yet: not refreshed
    AccountCredential.objects.filter(account=account).update(
        expires_at=timezone.now() - timedelta(hours=3)
    )
    networks.valid_tokens.discard(tokens["access_token"])  # expired at the network too
    credential = health.check_account(account)
    assert credential.status == AccountCredential.Status.OK
    assert credential.access_token == "at-2-secret" and credential.refresh_token == "rt-2-secret"
    assert credential.expires_at > timezone.now() + timedelta(minutes=110)
    [(_, _, form, headers)] = networks.token_requests()
    assert form["grant_type"] == "refresh_token" and form["refresh_token"] == "rt-1-secret"
    refreshed = LedgerEntry.objects.get(event="credential.refreshed")
    assert "secret" not in json.dumps(refreshed.payload)


def test_a_refused_refresh_needs_reconnecting(world, networks):
    account = make_account(world, "x")
    health.save_credential(
        account,
        oauth.Tokens(
            access_token="old-secret",
            refresh_token="revoked-refresh-secret",
            expires_at=timezone.now() - timedelta(minutes=30),
        ),
        actor=None,
        via="oauth",
    )
    credential = health.check_account(account)
    assert credential.status == AccountCredential.Status.RECONNECT
    assert "could not be refreshed" in credential.status_detail
    assert "revoked" in credential.status_detail


def test_fresh_access_token_refreshes_just_before_use(world, networks):
    account = make_account(world, "x")
    tokens = networks._issue()
    health.save_credential(
        account,
        oauth.Tokens(
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            expires_at=timezone.now() + timedelta(minutes=2),
        ),
        actor=None,
        via="oauth",
    )
    assert health.fresh_access_token(account) == "at-2-secret"
    assert health.fresh_access_token(account) == "at-2-secret"  # not due again: no new refresh
    assert len(networks.token_requests()) == 1


def test_a_network_that_cannot_be_reached_does_not_mark_reconnect(world, networks):
    account = connected(world, "linkedin", networks, settings={"author": "urn:li:person:1"})
    networks.stop()
    credential = health.check_account(account)
    assert credential.status == AccountCredential.Status.OK
    assert credential.status_detail.startswith("Could not check: could not reach LinkedIn")


def test_the_beat_runs_the_check_every_six_hours(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["check-account-credentials"]
    assert entry["task"] == "approvals.tasks.check_account_credentials"
    assert entry["schedule"] == 6 * 3600


# --- Where people see it --------------------------------------------------------------------------


def test_home_tells_the_advisor_which_accounts_need_reconnecting(client, world, networks):
    firm = connected(world, "linkedin", networks, settings={"author": "urn:li:organization:1"})
    own_of_bruno = connected(world, "x", networks, owner=world.bruno)
    own_of_bruno.team = world.paris
    own_of_bruno.save()
    client.force_login(world.alice)
    assert "Reconnect needed" not in client.get(reverse("home")).content.decode()

    networks.revoke_all()
    health.check_all()

    page = client.get(reverse("home")).content.decode()
    assert "Reconnect needed" in page
    assert "Lyon on linkedin" in page and "a compliance admin reconnects" in page
    assert "Lyon on x" not in page  # bruno's own account, another team
    assert connect_url(firm) not in page  # an advisor cannot use the admin page
    client.force_login(world.bruno)
    page = client.get(reverse("home")).content.decode()
    assert "Lyon on x" in page and "Lyon on linkedin" not in page
    client.force_login(world.carla)
    page = client.get(reverse("home")).content.decode()
    assert connect_url(firm) in page and connect_url(own_of_bruno) in page


def test_admin_list_highlights_reconnect_needed(client, world, networks):
    account = connected(world, "linkedin", networks, settings={"author": "urn:li:person:1"})
    networks.revoke_all()
    health.check_all()
    client.force_login(world.carla)
    page = client.get(reverse("admin:approvals_socialaccount_changelist")).content.decode()
    assert '<strong style="color: #ba2121">Reconnect needed</strong>' in page
    page = client.get(
        reverse("admin:approvals_socialaccount_changelist"), {"credential__status": "reconnect"}
    ).content.decode()
    assert "Lyon on linkedin" in page and "Lyon branch" not in page
    change = client.get(reverse("admin:approvals_socialaccount_change", args=[account.pk]))
    assert connect_url(account) in change.content.decode()


def test_sandbox_and_webhook_need_no_credential(client, world):
    client.force_login(world.carla)
    url = connect_url(world.lyon_sandbox)
    page = client.get(url).content.decode()
    assert "sandbox accounts need no credential" in page and 'type="password"' not in page
    response = client.post(url, {"action": "token", "token-access_token": "x"})
    assert response.status_code == 400
    assert not AccountCredential.objects.exists()
