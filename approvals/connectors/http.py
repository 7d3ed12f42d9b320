"""One way to call a network: timeouts, TLS verification, SSRF guard, errors in plain words."""

import ipaddress
import socket
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.utils import timezone

from .base import DeliveryError


def check_destination(url):
    """Refuse private, loopback, link-local and other internal addresses (SSRF), unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DeliveryError(f"not an http(s) address: {url!r}", permanent=True)
    if settings.REVIEWFLOW["ALLOW_PRIVATE_NETWORKS"]:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise DeliveryError(f"cannot resolve {parts.hostname}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if not address.is_global:
            raise DeliveryError(
                f"{parts.hostname} resolves to an internal address ({address}); refused",
                permanent=True,
            )


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


def request(method, url, *, network, expected=(200, 201, 202, 204), **kwargs):
    """Make one call; return the response, or raise DeliveryError saying what went wrong."""
    check_destination(url)
    kwargs.setdefault("timeout", settings.REVIEWFLOW["HTTP_TIMEOUT_SECONDS"])
    kwargs.setdefault("allow_redirects", False)
    try:
        response = requests.request(method, url, verify=True, **kwargs)
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
