from django.db import connection
from django.urls import reverse
from django.utils import timezone

from approvals.models import SandboxPost

from .base import Connector, Delivered, DeliveryError

_PUBLISH_SQL = (
    f"INSERT INTO {SandboxPost._meta.db_table}"
    " (account_id, idempotency_key, text, link, published_at) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = excluded.idempotency_key"
    " RETURNING id"
)


class SandboxConnector(Connector):
    """A network inside ReviewFlow: its feed page shows what was published, as a network would."""

    network = "sandbox"
    label = "Sandbox (built-in)"
    max_length = 500

    def publish(self, account, content, idempotency_key):
        # The network's dedupe, in one statement: a key published before returns its post. The
        # no-op update on conflict makes the insert return the existing row's id. (The ORM's
        # bulk_create says the same in a transaction of its own: three statements.)
        with connection.cursor() as cursor:
            now = connection.ops.adapt_datetimefield_value(timezone.now())
            values = [account.pk, idempotency_key, content.text, content.link, now]
            cursor.execute(_PUBLISH_SQL, values)
            [pk] = cursor.fetchone()
        return self._delivered(account, SandboxPost(pk=pk))

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
