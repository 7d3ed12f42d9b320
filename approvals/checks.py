"""System checks: a broken configuration fails at start-up, not at the first request."""

from django.conf import settings
from django.core.checks import Error, register

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
