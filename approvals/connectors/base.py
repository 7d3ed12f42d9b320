import hashlib
from dataclasses import dataclass

from django.db.models import Aggregate, JSONField, OuterRef, Subquery
from django.utils import timezone

from approvals.models.posts import Revision, content_hash
from approvals.prepared import prepared


class DeliveryError(Exception):
    """A call to a network that did not succeed, said in plain words.

    `permanent`: trying again cannot help. `retry_after`: seconds the network asked us to wait.
    `reconnect`: the credentials are expired or revoked; an admin or the owner must reconnect.
    """

    def __init__(self, message, *, permanent=False, retry_after=None, reconnect=False):
        super().__init__(message)
        self.permanent = permanent or reconnect
        self.retry_after = retry_after
        self.reconnect = reconnect


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str = ""
    reconnect: bool = False


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
    image_path: str = ""  # a local file path, when the revision has an image
    image_sha256: str = ""

    @classmethod
    def of(cls, revision, ids=None):
        """`ids`: (account ids, tag ids), when the caller's query has just read them with
        `released_ids()`; else they are read here."""
        account_ids, tag_ids = ids if ids is not None else _released_ids(pk=revision.pk).get()
        return cls(
            text=revision.text,
            link=revision.link,
            account_ids=tuple(sorted(account_ids or ())),  # an aggregate of no rows is NULL
            content_hash=revision.content_hash,
            tag_ids=tuple(sorted(tag_ids or ())),
            image_path=revision.image.path if revision.image else "",
            image_sha256=revision.image_sha256,
            post_id=revision.post_id,
            revision_number=revision.number,
        )

    def hash_matches(self):
        if self.image_path and _file_sha256(self.image_path) != self.image_sha256:
            return False
        computed = content_hash(
            self.text, self.link, self.account_ids, self.tag_ids, self.image_sha256
        )
        return computed == self.content_hash

    def text_with_link(self):
        """For networks without a link field (X, Mastodon): the link follows the text."""
        link = (self.link or "").strip()
        return f"{self.text} {link}" if link else self.text

    def image_bytes(self):
        """The image's bytes, checked against the approved hash: what is sent is what was
        approved, even if the file changed after the release gate read it."""
        with open(self.image_path, "rb") as image:
            data = image.read()
        if hashlib.sha256(data).hexdigest() != self.image_sha256:
            raise DeliveryError("the image is not the approved image", permanent=True)
        return data


class _IdList(Aggregate):
    """The values as one JSON array, read as a list."""

    function = "JSONB_AGG"
    output_field = JSONField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="JSON_GROUP_ARRAY", **extra_context)


def _id_list(through, column, revision):
    rows = through.objects.filter(revision_id=revision).values("revision_id")
    return Subquery(rows.annotate(ids=_IdList(column)).values("ids"))


def released_ids(revision):
    """Annotations with the revision's account ids and tag ids as the database holds them now,
    for `ReleasedContent.of`: a delivery reads them with its publication, in the same statement.
    `revision`: the revision's id, or a reference to it in the annotated query (`OuterRef`)."""
    return {
        "released_account_ids": _id_list(Revision.accounts.through, "socialaccount_id", revision),
        "released_tag_ids": _id_list(Revision.tags.through, "tag_id", revision),
    }


@prepared
def _released_ids(*, pk):
    ids = released_ids(OuterRef("pk"))
    return Revision.objects.filter(pk=pk).annotate(**ids).values_list(*ids)


def _file_sha256(path):
    with open(path, "rb") as image:
        return hashlib.file_digest(image, "sha256").hexdigest()


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

    def retract(self, account, external_id):
        """Delete the post on the network; raise DeliveryError when it cannot be done."""
        raise DeliveryError(f"{self.label} cannot delete posts", permanent=True)

    def find_delivery(self, account, idempotency_key, content) -> Delivered | None:
        """Whether an earlier, interrupted attempt did publish (for the stalled-delivery sweeper).

        None means "not found or cannot tell"; the sweeper then re-sends with the same key.
        """
        return None

    def health(self, account) -> Health:
        """Check the account's credentials with the network, without publishing."""
        return Health(ok=True, detail="nothing to check")

    # Later: fetch_interactions(account, since).


def external_account_id(account):
    """The account's id on the network, as given when it was connected ("" when unknown)."""
    credential = getattr(account, "credential", None)
    return str(getattr(credential, "external_account_id", "") or "").strip()


def access_token(account):
    """The account's usable token (refreshed when about to expire), or DeliveryError(reconnect)."""
    from approvals.health import fresh_access_token  # health imports connectors

    return fresh_access_token(account)
