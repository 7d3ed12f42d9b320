import hashlib
import json

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition


class State(models.TextChoices):
    DRAFT = "draft", "Draft"
    IN_REVIEW = "in_review", "In review"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    WITHDRAWN = "withdrawn", "Withdrawn"
    PUBLISHING = "publishing", "Publishing"
    PUBLISHED = "published", "Published"
    PARTIALLY_PUBLISHED = "partially_published", "Partly published"
    FAILED = "failed", "Failed"
    RETRACTED = "retracted", "Retracted"
    EXPIRED = "expired", "Expired"


EDITABLE_STATES = (State.DRAFT, State.CHANGES_REQUESTED, State.APPROVED, State.EXPIRED)


def content_hash(text, link, account_ids, tag_ids=(), image_sha256=""):
    """sha256 of a revision's content: what reviewers approve and what connectors must receive."""
    content = {"text": text, "link": link, "accounts": sorted(account_ids), "tags": sorted(tag_ids)}
    if image_sha256:
        content["image"] = image_sha256
    canonical = json.dumps(
        content,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# Transition permissions: (post, user) -> bool. The workflow module asks them before every move.
def is_author(post, user):
    return user.pk == post.author_id


def may_decide(post, user):
    """Granted review on the post's team (guardian), and not its author.

    Asked several times per decision (the checks, the transition, the page): answered once per
    post instance, which lives for one request or one locked transaction, or by the query that
    read the post (`review_grant`, then `knows_review_grant`).
    """
    if user.pk == post.author_id or not user.is_active:
        return False
    answer = _grant_attribute(user)
    if answer not in post.__dict__:
        from ..access import reviewable_teams  # access builds on these models

        post.__dict__[answer] = reviewable_teams(user).filter(pk=post.team_id).exists()
    return post.__dict__[answer]


def review_grant(user):
    """may_decide's grant question for `user`, as an expression over a post's row: asked in
    the query that reads the post rather than in one more."""
    from ..access import reviewable_teams

    return models.Exists(reviewable_teams(user).filter(pk=models.OuterRef("team_id")))


def knows_review_grant(post, user, granted):
    """Keep the answer to may_decide's grant question for `user`, read along with `post`."""
    post.__dict__[_grant_attribute(user)] = granted


def _grant_attribute(user):
    return f"review_granted_to_{user.pk}"


def may_retry(post, user):
    return is_author(post, user) or user.has_perm("approvals.oversee_posts")


class Post(ConcurrentTransitionMixin, models.Model):
    """The content item an advisor works on: revisions, and one lifecycle state."""

    team = models.ForeignKey("approvals.Team", on_delete=models.PROTECT, related_name="posts")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="posts"
    )
    state = FSMField(default=State.DRAFT, choices=State.choices, protected=True, db_index=True)
    current_revision = models.ForeignKey(
        "approvals.Revision", null=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_revision = models.ForeignKey(
        "approvals.Revision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    publish_at = models.DateTimeField(
        null=True, blank=True, help_text="When to publish; empty means as soon as approved."
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    approval_expires_at = models.DateTimeField(null=True, blank=True)
    # Set when the route cannot finish before publish_at; the author and reviewers are told.
    publish_at_risk_since = models.DateTimeField(null=True, blank=True)
    # When the author was told the approval expires soon (once per approval).
    expiry_warned_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        permissions = [("oversee_posts", "Can see every team's posts and retry deliveries")]
        indexes = [models.Index(fields=["state", "team"])]

    def __str__(self):
        return f"Post #{self.pk}"

    # Conditions
    def has_content(self):
        return self.current_revision_id is not None and self.current_revision.accounts.exists()

    def approval_is_current(self):
        return (
            self.approved_revision_id == self.current_revision_id
            and self.approval_expires_at is not None
            and self.approval_expires_at > timezone.now()
        )

    def approval_lapsed(self):
        return self.approval_expires_at is not None and self.approval_expires_at <= timezone.now()

    def is_due(self):
        return self.publish_at is None or self.publish_at <= timezone.now()

    # Transitions: each is called only by approvals.workflow, which locks and logs.
    @transition(
        field=state,
        source=[State.DRAFT, State.CHANGES_REQUESTED, State.EXPIRED],
        target=State.IN_REVIEW,
        conditions=[has_content],
        permission=is_author,
    )
    def submit(self):
        self.submitted_at = timezone.now()

    @transition(
        field=state,
        source=[State.DRAFT, State.IN_REVIEW, State.CHANGES_REQUESTED, State.APPROVED],
        target=State.WITHDRAWN,
        permission=is_author,
    )
    def withdraw(self):
        pass

    @transition(field=state, source=State.IN_REVIEW, target=State.APPROVED, permission=may_decide)
    def approve(self):
        now = timezone.now()
        self.approved_revision = self.current_revision
        self.approved_at = now
        self.approval_expires_at = now + timezone.timedelta(
            days=settings.REVIEWFLOW["APPROVAL_VALID_DAYS"]
        )
        self.expiry_warned_at = None  # a new approval: warned again before it expires

    @transition(
        field=state,
        source=State.IN_REVIEW,
        target=State.CHANGES_REQUESTED,
        permission=may_decide,
    )
    def request_changes(self):
        pass

    @transition(field=state, source=State.IN_REVIEW, target=State.REJECTED, permission=may_decide)
    def reject(self):
        pass

    @transition(field=state, source=State.APPROVED, target=State.IN_REVIEW, permission=is_author)
    def void_approval(self):
        """An edit of approved content: the new revision goes back through review."""
        self.approved_revision = None
        self.approved_at = self.approval_expires_at = None
        self.submitted_at = timezone.now()

    @transition(
        field=state,
        source=State.APPROVED,
        target=State.PUBLISHING,
        conditions=[approval_is_current, is_due],
    )
    def release(self):
        pass

    @transition(field=state, source=State.PUBLISHING, target=State.PUBLISHED)
    def mark_published(self):
        pass

    @transition(field=state, source=State.PUBLISHING, target=State.PARTIALLY_PUBLISHED)
    def mark_partially_published(self):
        """Some deliveries succeeded and others failed for good: say so, never "published"."""

    @transition(field=state, source=State.PUBLISHING, target=State.FAILED)
    def mark_failed(self):
        pass

    @transition(
        field=state,
        source=[State.FAILED, State.PARTIALLY_PUBLISHED],
        target=State.PUBLISHING,
        permission=may_retry,
    )
    def retry(self):
        pass

    @transition(
        field=state,
        source=[State.PUBLISHED, State.PARTIALLY_PUBLISHED, State.FAILED],
        target=State.RETRACTED,
        permission=may_retry,
    )
    def retract(self):
        """Take-down: the author or a compliance admin removes it from every network."""

    @transition(
        field=state, source=State.APPROVED, target=State.EXPIRED, conditions=[approval_lapsed]
    )
    def expire(self):
        pass

    @property
    def is_editable(self):
        return self.state in EDITABLE_STATES


class Revision(models.Model):
    """An immutable snapshot of a post's content, identified by its content hash."""

    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    text = models.TextField()
    link = models.URLField(max_length=2000, blank=True)
    accounts = models.ManyToManyField("approvals.SocialAccount", related_name="revisions")
    tags = models.ManyToManyField("approvals.Tag", related_name="revisions", blank=True)
    # One image per post; its sha256 is part of the content hash, so it is approved byte for byte.
    image = models.FileField(upload_to="revisions/%Y/%m/", blank=True)
    image_sha256 = models.CharField(max_length=64, blank=True)
    content_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["post", "number"]
        constraints = [
            models.UniqueConstraint(fields=["post", "number"], name="revision_number_unique")
        ]

    def __str__(self):
        return f"{self.post} r{self.number}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("A revision is immutable; create a new one.")
        super().save(*args, **kwargs)

    @property
    def short_hash(self):
        return self.content_hash[:12]


class RevisionView(models.Model):
    """The revision a reviewer last saw, so a resubmission shows them what changed since."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    post = models.ForeignKey(Post, on_delete=models.CASCADE, related_name="+")
    revision = models.ForeignKey(Revision, on_delete=models.CASCADE, related_name="+")
    seen_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "post"], name="revision_view_unique")
        ]

    def __str__(self):
        return f"{self.user} saw {self.revision}"
