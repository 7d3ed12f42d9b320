from django.urls import reverse
from django.utils import timezone

from approvals.models import SandboxPost

from .base import Connector, Delivered, DeliveryError


class SandboxConnector(Connector):
    """A network inside ReviewFlow: its feed page shows what was published, as a network would."""

    network = "sandbox"
    label = "Sandbox (built-in)"
    max_length = 500

    def publish(self, account, content, idempotency_key):
        # One statement: a key published before returns its post (the network's dedupe); the
        # no-op update on conflict is what makes the insert return the existing row's id.
        [post] = SandboxPost.objects.bulk_create(
            [
                SandboxPost(
                    idempotency_key=idempotency_key,
                    account=account,
                    text=content.text,
                    link=content.link,
                )
            ],
            update_conflicts=True,
            unique_fields=["idempotency_key"],
            update_fields=["idempotency_key"],
        )
        return self._delivered(account, post)

    def find_delivery(self, account, idempotency_key, content):
        post = SandboxPost.objects.filter(account=account, idempotency_key=idempotency_key).first()
        return self._delivered(account, post) if post is not None else None

    def retract(self, account, external_id):
        """Hide the post from the feed (kept, with when it was taken down)."""
        pk = external_id.removeprefix("sandbox-")
        posts = SandboxPost.objects.filter(account=account, pk=pk if pk.isdigit() else None)
        if not posts.exists():
            raise DeliveryError(f"the sandbox has no post {external_id}", permanent=True)
        posts.filter(retracted_at__isnull=True).update(retracted_at=timezone.now())

    @staticmethod
    def _delivered(account, post):
        url = reverse("sandbox_feed", args=[account.pk]) + f"#sandbox-{post.pk}"
        return Delivered(external_id=f"sandbox-{post.pk}", url=url)
