"""Publishing connectors: one module per network behind one interface, found by one registry."""

from functools import cache

from django.utils.module_loading import import_string

from .base import Connector, Delivered, DeliveryError, ReleasedContent, released_ids

REGISTRY = {
    "sandbox": "approvals.connectors.sandbox.SandboxConnector",
    "webhook": "approvals.connectors.webhook.WebhookConnector",
    "linkedin": "approvals.connectors.linkedin.LinkedInConnector",
    "facebook": "approvals.connectors.facebook.FacebookConnector",
    "x": "approvals.connectors.x.XConnector",
    "mastodon": "approvals.connectors.mastodon.MastodonConnector",
}


@cache
def get_connector(network) -> Connector:
    try:
        return import_string(REGISTRY[network])()
    except KeyError:
        raise LookupError(f"No connector for network {network!r}") from None


def connector_choices():
    return [(network, get_connector(network).label) for network in REGISTRY]


__all__ = [
    "Connector",
    "Delivered",
    "DeliveryError",
    "REGISTRY",
    "ReleasedContent",
    "connector_choices",
    "get_connector",
    "released_ids",
]
