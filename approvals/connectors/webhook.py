"""Webhook: an HTTP POST of the released content, signed as Standard Webhooks specifies.

https://www.standardwebhooks.com: headers webhook-id (stable across retries, so receivers drop
duplicates), webhook-timestamp, webhook-signature ("v1," + base64 HMAC-SHA256 over
"id.timestamp.body" with the secret's bytes). One attempt per call: the delivery engine retries.
A take-down is a signed "post.retracted" event naming the receiver's id for the post.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ValidationError

from .base import Connector, Delivered, DeliveryError
from .http import check_destination, retry_after_seconds, session, validate_destination

SECRET_PREFIX = "whsec_"
URL_MAX_LENGTH = 2000  # Publication.external_url
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def new_secret():
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_bytes(secret):
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def sign(secret, msg_id, timestamp, body):
    mac = hmac.new(secret_bytes(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class WebhookConnector(Connector):
    network = "webhook"
    label = "Webhook (signed HTTP POST)"
    max_length = 10000

    def clean_settings(self, config):
        url = str(config.get("url", "")).strip()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("settings.url must be an http or https URL.")
        validate_destination(url)  # no private, loopback or link-local receiver unless allowed
        secret = str(config.get("secret") or "") or new_secret()
        try:
            if not secret.startswith(SECRET_PREFIX) or len(secret_bytes(secret)) < 16:
                raise ValueError
        except (ValueError, binascii.Error):
            raise ValidationError(
                "settings.secret must be 'whsec_' followed by base64 of 16 or more bytes "
                "(leave it empty to have one generated)."
            ) from None
        return {**config, "url": url, "secret": secret}

    def publish(self, account, content, idempotency_key):
        check_destination(account.settings["url"])  # SSRF: refused, permanently, when internal
        config = settings.REVIEWFLOW
        body = json.dumps(
            {
                "type": "post.published",
                "timestamp": int(time.time()),
                "data": {
                    "post_id": content.post_id,
                    "revision": content.revision_number,
                    "content_hash": content.content_hash,
                    "account": {"id": account.pk, "name": account.name, "handle": account.handle},
                    "text": content.text,
                    "link": content.link,
                },
            },
            ensure_ascii=False,
        ).encode()
        # One attempt per call: the delivery engine retries (backoff, Retry-After, max attempts)
        # with the same webhook-id, so the receiver can drop a duplicate.
        response = self._post(account, idempotency_key, body, config)
        return self._delivered(response, idempotency_key)

    def retract(self, account, external_id):
        """A signed "post.retracted" event: the receiver takes the post down."""
        check_destination(account.settings["url"])
        body = json.dumps(
            {
                "type": "post.retracted",
                "timestamp": int(time.time()),
                "data": {
                    "external_id": external_id,
                    "account": {"id": account.pk, "name": account.name, "handle": account.handle},
                },
            },
            ensure_ascii=False,
        ).encode()
        # Stable across retries of this deletion (a receiver drops duplicates), distinct from
        # the publication's own webhook-id.
        digest = hashlib.sha256(f"{account.pk}:{external_id}".encode()).hexdigest()[:32]
        self._post(account, f"msg_retract_{digest}", body, settings.REVIEWFLOW)

    @staticmethod
    def _post(account, msg_id, body, config):
        """One signed POST; the 2xx response, or a DeliveryError in plain words."""
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            "user-agent": "ReviewFlow-Webhook/1",
            "webhook-id": msg_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": sign(account.settings["secret"], msg_id, timestamp, body),
        }
        timeout = config["WEBHOOK_TIMEOUT_SECONDS"]
        try:
            response = session().post(
                account.settings["url"],
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                verify=True,
            )
        except requests.Timeout:
            raise DeliveryError(f"the receiver did not answer within {timeout} s") from None
        except requests.RequestException as error:
            raise DeliveryError(
                f"could not reach the receiver ({error.__class__.__name__})"
            ) from None
        if 200 <= response.status_code < 300:
            return response
        status = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code not in RETRYABLE_STATUS:
            raise DeliveryError(f"refused by the receiver: {status}", permanent=True)
        raise DeliveryError(
            f"the receiver had a temporary problem ({status})",
            retry_after=retry_after_seconds(response) if response.status_code == 429 else None,
        )

    @staticmethod
    def _delivered(response, idempotency_key):
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        url = str(answer.get("url") or "")
        try:
            scheme = urlsplit(url).scheme
        except ValueError:  # e.g. "http://[::1": the post is out, keep the delivery
            scheme = ""
        if scheme not in ("http", "https") or len(url) > URL_MAX_LENGTH:
            url = ""  # never render a javascript: link a receiver sent back; never overflow
        return Delivered(external_id=str(answer.get("id") or idempotency_key)[:200], url=url)
