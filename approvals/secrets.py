"""Encryption at rest for network credentials (Fernet: AES-128-CBC with HMAC-SHA256).

The key comes from REVIEWFLOW_CREDENTIALS_KEY (a Fernet key, or any passphrase: it is stretched
with sha256). Without it, development instances derive one from SECRET_KEY; the deploy check
(approvals.W003) warns, since rotating SECRET_KEY would then lose every stored token.
"""

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


def _fernet():
    secret = settings.REVIEWFLOW["CREDENTIALS_KEY"] or f"derived:{settings.SECRET_KEY}"
    try:
        return Fernet(secret.encode())
    except ValueError:
        return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest()))


def encrypt(value):
    return _fernet().encrypt(value.encode()).decode()


def decrypt(token):
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "A stored credential cannot be decrypted: REVIEWFLOW_CREDENTIALS_KEY changed. "
            "Reconnect the account."
        ) from None
