from django.urls import reverse

from approvals.models import SandboxPost

from .base import Connector, Delivered


class SandboxConnector(Connector):
    """A network inside ReviewFlow: its feed page shows what was published, as a network would."""

    network = "sandbox"
    label = "Sandbox (built-in)"
    max_length = 500

    def publish(self, account, content, idempotency_key):
        post, _ = SandboxPost.objects.get_or_create(
            idempotency_key=idempotency_key,
            defaults={"account": account, "text": content.text, "link": content.link},
        )
        url = reverse("sandbox_feed", args=[account.pk]) + f"#sandbox-{post.pk}"
        return Delivered(external_id=f"sandbox-{post.pk}", url=url)
