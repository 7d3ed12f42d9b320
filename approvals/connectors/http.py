"""One way to call a network: timeouts, TLS verification, SSRF guard, kept-alive connections,
errors in plain words."""

import ipaddress
import os
import socket
import threading
from email.utils import parsedate_to_datetime
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils import timezone

from .base import DeliveryError


def check_destination(url):
    """Refuse private, loopback, link-local and other internal addresses (SSRF), unless allowed.

    Every address the host name resolves to must be global; an IPv6 address that carries an
    IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64) is judged by the IPv4 address it carries.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise DeliveryError(f"not a valid address: {url!r}", permanent=True) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"not an http(s) address: {url!r}", permanent=True)
    if settings.REVIEWFLOW["ALLOW_PRIVATE_NETWORKS"]:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise DeliveryError(f"cannot resolve {parts.hostname}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if _internal(address):
            raise DeliveryError(
                f"{parts.hostname} resolves to an internal address ({address}): refused, as "
                "calls to private, loopback and link-local addresses are "
                "(REVIEWFLOW_ALLOW_PRIVATE_NETWORKS=1 allows them, for on-premises receivers)",
                permanent=True,
            )


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _internal(address):
    if address.version == 6:
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and _internal(embedded):
            return True
    return not address.is_global or address.is_multicast


def validate_destination(url, field="settings.url"):
    """check_destination for forms and clean_settings: a ValidationError naming the field."""
    from django.core.exceptions import ValidationError

    try:
        check_destination(url)
    except DeliveryError as error:
        raise ValidationError(f"{field}: {error}") from None


def retry_after_seconds(response):
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int((moment - timezone.now()).total_seconds()))


_local = threading.local()
os.register_at_fork(after_in_child=lambda: _local.__dict__.clear())  # no socket of the parent's


def session():
    """This thread's HTTP session. A network's API is called over connections kept alive from one
    post to the next: a TLS handshake per connection, not per post (README, "Throughput"). It
    keeps no cookie: one account's must never go out with another account's call."""
    current = getattr(_local, "session", None)
    if current is None:
        current = _local.session = requests.Session()
        current.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return current


def request(method, url, *, network, expected=(200, 201, 202, 204), **kwargs):
    """Make one call; return the response, or raise DeliveryError saying what went wrong."""
    check_destination(url)
    kwargs.setdefault("timeout", settings.REVIEWFLOW["HTTP_TIMEOUT_SECONDS"])
    kwargs.setdefault("allow_redirects", False)
    try:
        response = session().request(method, url, verify=True, **kwargs)
    except requests.Timeout:
        raise DeliveryError(f"{network} did not answer within {kwargs['timeout']} s") from None
    except requests.RequestException as error:
        raise DeliveryError(f"could not reach {network} ({error.__class__.__name__})") from None
    if response.status_code in expected:
        return response
    raise error_for(response, network)


def error_for(response, network):
    """Turn a refusal into a DeliveryError a person can read."""
    status = response.status_code
    detail = _detail(response)
    if status == 401:
        return DeliveryError(
            f"{network} refused the access token (expired or revoked): reconnect the account. "
            f"{detail}".strip(),
            reconnect=True,
        )
    if status == 429:
        wait = retry_after_seconds(response)
        when = f"; it asks to wait {wait} s" if wait is not None else ""
        return DeliveryError(f"{network} rate limit reached{when}", retry_after=wait)
    if status >= 500 or status in (408, 425):
        return DeliveryError(f"{network} had a temporary problem (HTTP {status}). {detail}".strip())
    return DeliveryError(f"{network} refused the post (HTTP {status}): {detail}", permanent=True)


def _detail(response):
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        for key in ("detail", "message", "error_description", "error", "title"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("error_user_msg")
            if value:
                return str(value)[:300]
    return str(body)[:200]
