"""SSRF safety: no call to private, loopback or link-local addresses unless allowed; TLS verified;
a timeout on every call. Real requests over loopback, no mocked HTTP client."""

import time
from http.server import BaseHTTPRequestHandler

import pytest
from django.core.exceptions import ValidationError

from approvals.connectors import get_connector, http
from approvals.connectors.base import DeliveryError
from approvals.models import Publication, SocialAccount
from approvals.models.posts import State

from .conftest import through_review
from .localserver import LocalServer, self_signed_certificate

pytestmark = pytest.mark.django_db


@pytest.fixture
def guarded(settings):
    """The production setting: private addresses refused (tests otherwise allow them)."""
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": False}
    return settings


@pytest.fixture
def allowed(settings):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": True}
    return settings


class Server(LocalServer):
    """A local HTTP(S) server counting the requests it gets; can stall or redirect."""

    def __init__(self, *, stall=0.0, redirect_to=None, tls=None, keep_alive=False):
        self.stall, self.redirect_to, self.keep_alive = stall, redirect_to, keep_alive
        self.hits = []
        self.ports, self.cookies = [], []  # each request's client port, and Cookie header
        super().__init__(tls)

    @property
    def url(self):
        return self.base_url + "/hook"

    def _handler_class(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if outer.keep_alive else "HTTP/1.0"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                outer.hits.append((self.command, self.path))
                outer.ports.append(self.client_address[1])
                outer.cookies.append(self.headers.get("Cookie"))
                if outer.stall:
                    time.sleep(outer.stall)
                if outer.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b'{"id": "ok"}'
                self.send_response(200)
                self.send_header("Set-Cookie", "session=one-account; Path=/")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        return Handler


@pytest.fixture
def server():
    with Server() as running:
        yield running


# --- The guard ------------------------------------------------------------------------------------

INTERNAL = [
    "http://127.0.0.1/",
    "http://127.8.9.10:8080/x",
    "http://10.0.0.7/",
    "http://172.16.5.4/",
    "http://192.168.1.1/admin",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # cloud metadata
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://0.0.0.0:8000/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[fd00::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://localhost:8000/",  # a name that resolves to loopback
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f.1/",  # and in hex shorthand
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused(guarded, url):
    with pytest.raises(DeliveryError) as refused:
        http.check_destination(url)
    assert refused.value.permanent
    assert "internal address" in str(refused.value)
    assert "REVIEWFLOW_ALLOW_PRIVATE_NETWORKS" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/",
        "gopher://127.0.0.1:6379/_INFO",
        "dict://127.0.0.1:11211/stat",
        "javascript:alert(1)",
        "//example.com/no-scheme",
        "http:///no-host",
        "http://example.com:99999/",  # no such port
    ],
)
def test_only_http_and_https_addresses_even_when_private_ones_are_allowed(allowed, url):
    with pytest.raises(DeliveryError) as refused:
        http.check_destination(url)
    assert refused.value.permanent


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "https://[2606:4700:4700::1111]/dns-query"])
def test_public_addresses_pass(guarded, url):
    http.check_destination(url)  # IP literals: no DNS needed


def test_the_setting_allows_private_addresses(allowed):
    for url in ("http://127.0.0.1:8000/", "http://10.0.0.7/", "http://localhost/"):
        http.check_destination(url)


def test_request_refuses_before_connecting(guarded, server):
    with pytest.raises(DeliveryError) as refused:
        http.request("POST", server.url, network="Test", json={"a": 1})
    assert refused.value.permanent
    assert server.hits == []  # nothing left the process


def test_request_does_not_follow_redirects(allowed, server):
    with Server(redirect_to=server.url) as redirecting:
        with pytest.raises(DeliveryError):
            http.request("GET", redirecting.url, network="Test")
    assert len(redirecting.hits) == 1 and server.hits == []


# --- Timeouts and TLS -----------------------------------------------------------------------------


def test_every_request_has_a_timeout(allowed, settings):
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "HTTP_TIMEOUT_SECONDS": 0.3}
    with Server(stall=1.5) as slow:
        started = time.monotonic()
        with pytest.raises(DeliveryError) as late:
            http.request("GET", slow.url, network="Slow")
        assert time.monotonic() - started < 1.2
    assert "did not answer within 0.3 s" in str(late.value)
    assert not late.value.permanent  # worth retrying later


def test_tls_certificates_are_verified(allowed, tmp_path):
    with Server(tls=self_signed_certificate(tmp_path)) as untrusted:
        with pytest.raises(DeliveryError) as refused:
            http.request("GET", untrusted.url, network="Untrusted")
    assert "SSLError" in str(refused.value)
    assert untrusted.hits == []  # the handshake failed: no request was made


def test_calls_to_a_network_reuse_one_connection_and_carry_no_cookie(
    allowed, tmp_path, monkeypatch
):
    """One TLS handshake per connection, not per post (README, "Throughput"); and a cookie that
    a network sets in one account's call never goes out with the next, whoever's it is: every
    account of a worker thread shares the session."""
    certificate = self_signed_certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    with Server(tls=certificate, keep_alive=True) as network:
        for n in range(3):
            http.request("POST", network.url, network="Test", json={"post": n})
    assert len(network.hits) == 3
    assert len(set(network.ports)) == 1, network.ports
    assert network.cookies == [None, None, None]


# --- The webhook connector ------------------------------------------------------------------------


def test_webhook_settings_refuse_a_private_receiver_with_a_clear_message(guarded, world):
    account = SocialAccount(
        team=world.lyon,
        network="webhook",
        name="Intranet",
        settings={"url": "http://169.254.169.254/latest/meta-data/", "secret": ""},
    )
    with pytest.raises(ValidationError) as refused:
        account.full_clean()
    [message] = refused.value.message_dict["settings"]
    assert message.startswith("settings.url: 169.254.169.254 resolves to an internal address")
    assert "REVIEWFLOW_ALLOW_PRIVATE_NETWORKS=1 allows them" in message


def test_webhook_settings_accept_a_private_receiver_when_allowed(allowed, world):
    config = get_connector("webhook").clean_settings({"url": "http://10.1.2.3/hook"})
    assert config["url"] == "http://10.1.2.3/hook"


def test_webhook_to_a_private_address_fails_clearly_and_sends_nothing(
    world, hook_account, webhook_receiver, django_capture_on_commit_callbacks, settings
):
    # The account was saved while allowed (an on-premises receiver); the setting is now off.
    settings.REVIEWFLOW = {**settings.REVIEWFLOW, "ALLOW_PRIVATE_NETWORKS": False}
    post = through_review(
        world, django_capture_on_commit_callbacks, [hook_account], "Portes ouvertes"
    )
    publication = Publication.objects.get(post=post)
    assert publication.state == Publication.State.FAILED
    assert "127.0.0.1 resolves to an internal address" in publication.error
    assert publication.attempts == 1  # permanent: not retried
    assert post.state == State.FAILED
    assert webhook_receiver.received == []


def test_webhook_verifies_tls(allowed, world, tmp_path):
    account = SocialAccount(team=world.lyon, network="webhook", name="TLS", validated=True)
    with Server(tls=self_signed_certificate(tmp_path)) as untrusted:
        account.settings = {"url": untrusted.url, "secret": ""}
        account.full_clean()
        account.save()
        with pytest.raises(DeliveryError) as failed:
            get_connector("webhook").publish(account, _content(account), "msg_tls")
    assert "SSLError" in str(failed.value)
    assert untrusted.hits == []


def test_webhook_delivers_over_tls_to_a_receiver_it_trusts(allowed, world, tmp_path, monkeypatch):
    """The test above, its certificate trusted (as benchmarks/release.py trusts its receiver):
    the refusal there is the verification's, not a broken server's."""
    certificate = self_signed_certificate(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certificate[0])
    account = SocialAccount(team=world.lyon, network="webhook", name="TLS", validated=True)
    with Server(tls=certificate) as trusted:
        account.settings = {"url": trusted.url, "secret": ""}
        account.full_clean()
        account.save()
        delivered = get_connector("webhook").publish(account, _content(account), "msg_tls")
    assert trusted.hits == [("POST", "/hook")]
    assert delivered.external_id == "ok"


def _content(account):
    from approvals.connectors.base import ReleasedContent

    return ReleasedContent(
        text="x",
        link="",
        account_ids=(account.pk,),
        content_hash="0" * 64,
        tag_ids=(),
        post_id=1,
        revision_number=1,
    )
