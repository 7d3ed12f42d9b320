"""Webhook: an HTTP POST of the released content, signed as Standard Webhooks specifies.

https://www.standardwebhooks.com: headers webhook-id (stable across retries, so receivers drop
duplicates), webhook-timestamp, webhook-signature ("v1," + base64 HMAC-SHA256 over
"id.timestamp.body" with the secret's bytes).
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
        attempts, last_error = config["WEBHOOK_MAX_ATTEMPTS"], ""
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(config["WEBHOOK_BACKOFF_SECONDS"] * 2 ** (attempt - 2))
            timestamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "user-agent": "ReviewFlow-Webhook/1",
                "webhook-id": idempotency_key,
                "webhook-timestamp": timestamp,
                "webhook-signature": sign(
                    account.settings["secret"], idempotency_key, timestamp, body
                ),
            }
            try:
                response = requests.post(
                    account.settings["url"],
                    data=body,
                    headers=headers,
                    timeout=config["WEBHOOK_TIMEOUT_SECONDS"],
                    allow_redirects=False,
                )
            except requests.Timeout:
                last_error = f"no answer within {config['WEBHOOK_TIMEOUT_SECONDS']} s"
                continue
            except requests.RequestException as error:
                last_error = f"connection failed: {error.__class__.__name__}"
                continue
            if 200 <= response.status_code < 300:
                return self._delivered(response, idempotency_key)
            last_error = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in RETRYABLE_STATUS:
                raise DeliveryError(f"refused by the receiver: {last_error}", permanent=True)
        raise DeliveryError(f"gave up after {attempts} attempts; last: {last_error}")

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
