"""System checks: a broken configuration fails at start-up, not at the first request."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .connectors import REGISTRY, get_connector


@register()
def check_reviewflow_settings(app_configs, **kwargs):
    errors = []
    config = settings.REVIEWFLOW
    for key in ("APPROVAL_VALID_DAYS", "MAX_POST_LENGTH", "DELIVERY_LEASE_SECONDS"):
        if config[key] <= 0:
            errors.append(Error(f"REVIEWFLOW[{key!r}] must be positive.", id="approvals.E001"))
    for network in REGISTRY:
        try:
            get_connector(network)
        except ImportError as error:
            errors.append(
                Error(f"Connector {network!r} cannot be imported: {error}", id="approvals.E002")
            )
    return errors


@register(Tags.security, deploy=True)
def check_credentials_key(app_configs, **kwargs):
    """Without its own key, stored network tokens hang on SECRET_KEY: rotating it loses them."""
    if settings.DEBUG or settings.REVIEWFLOW["CREDENTIALS_KEY"]:
        return []
    return [
        Warning(
            "REVIEWFLOW_CREDENTIALS_KEY is not set: network tokens are encrypted with a key "
            "derived from SECRET_KEY, and rotating SECRET_KEY would make every stored token "
            "unreadable (each account would need reconnecting).",
            hint='Set REVIEWFLOW_CREDENTIALS_KEY to a Fernet key (python -c "from '
            'cryptography.fernet import Fernet; print(Fernet.generate_key().decode())") '
            "and keep it with your backups.",
            id="approvals.W003",
        )
    ]
