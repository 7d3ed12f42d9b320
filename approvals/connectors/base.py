from dataclasses import dataclass

from django.utils import timezone

from approvals.models.posts import content_hash


class DeliveryError(Exception):
    """A delivery that did not happen. `permanent` says whether trying again can help."""

    def __init__(self, message, *, permanent=False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ReleasedContent:
    """Exactly what leaves ReviewFlow: the approved revision's content and its hash."""

    text: str
    link: str
    account_ids: tuple
    content_hash: str
    tag_ids: tuple
    post_id: int
    revision_number: int

    @classmethod
    def of(cls, revision):
        return cls(
            text=revision.text,
            link=revision.link,
            account_ids=tuple(sorted(revision.accounts.values_list("pk", flat=True))),
            content_hash=revision.content_hash,
            tag_ids=tuple(sorted(revision.tags.values_list("pk", flat=True))),
            post_id=revision.post_id,
            revision_number=revision.number,
        )

    def hash_matches(self):
        computed = content_hash(self.text, self.link, self.account_ids, self.tag_ids)
        return computed == self.content_hash


@dataclass(frozen=True)
class Delivered:
    external_id: str
    url: str = ""


class Connector:
    """One network. Subclasses implement `publish`; `deliver` is the last gate before it."""

    network = ""
    label = ""
    max_length = None  # characters, as the network counts them; None: no limit

    def clean_settings(self, settings):
        """Validate an account's connector settings; raise ValidationError naming what is wrong."""
        return settings

    def count(self, text, link):
        return len(text) + (len(link) + 1 if link else 0)

    def deliver(self, publication, content: ReleasedContent) -> Delivered:
        """Refuse anything but the approved bytes for a validated account, then publish."""
        post, account = publication.post, publication.account
        if not content.hash_matches():
            raise DeliveryError("content does not hash to its revision's hash", permanent=True)
        if content.content_hash != publication.revision.content_hash or (
            post.approved_revision_id != publication.revision_id
        ):
            raise DeliveryError("content is not the approved revision", permanent=True)
        if post.approval_expires_at is None or post.approval_expires_at <= timezone.now():
            raise DeliveryError("the approval has expired", permanent=True)
        if not account.validated:
            raise DeliveryError("the account is not validated by compliance", permanent=True)
        if account.pk not in content.account_ids:
            raise DeliveryError(
                "the account is not a target of the approved revision", permanent=True
            )
        return self.publish(account, content, publication.idempotency_key)

    def publish(self, account, content: ReleasedContent, idempotency_key) -> Delivered:
        raise NotImplementedError

    # Later: retract(account, external_id) and fetch_interactions(account, since).
