import uuid

from django.db import models


def new_idempotency_key():
    return f"msg_{uuid.uuid4().hex}"


class Publication(models.Model):
    """One delivery of one approved revision to one account: made at most once."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting"
        SENDING = "sending", "Sending"
        DELIVERED = "delivered", "Published"
        FAILED = "failed", "Failed"
        # Take-down: a delivered publication whose deletion on the network is queued or running.
        RETRACTING = "retracting", "Being removed"
        RETRACTED = "retracted", "Removed"
        RETRACT_FAILED = "retract_failed", "Removal failed"

    post = models.ForeignKey(
        "approvals.Post", on_delete=models.PROTECT, related_name="publications"
    )
    revision = models.ForeignKey(
        "approvals.Revision", on_delete=models.PROTECT, related_name="publications"
    )
    account = models.ForeignKey(
        "approvals.SocialAccount", on_delete=models.PROTECT, related_name="publications"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    # Sent with every attempt (webhook-id, Idempotency-Key) so a receiver can drop duplicates.
    idempotency_key = models.CharField(max_length=64, unique=True, default=new_idempotency_key)
    external_id = models.CharField(max_length=200, blank=True)
    external_url = models.URLField(max_length=2000, blank=True)
    error = models.TextField(blank=True)
    # Attempts of the current operation (delivery, or take-down once retracting); reset by a
    # manual retry. Every attempt also leaves a DeliveryAttempt row.
    attempts = models.PositiveIntegerField(default=0)
    # Claims lost with their worker (recovered by the sweeper): capped by DELIVERY_MAX_CLAIMS.
    lost_claims = models.PositiveIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    # The outbox: a pending publication is (re)enqueued when it is due and not recently enqueued.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    retracted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["revision", "account"], name="one_publication_per_revision_and_account"
            )
        ]
        indexes = [
            models.Index(fields=["state", "claimed_at"]),
            models.Index(fields=["state", "next_attempt_at"]),
        ]

    def __str__(self):
        return f"{self.revision} to {self.account}"


class DeliveryAttempt(models.Model):
    """One try at handing a publication to its network, kept whatever its outcome."""

    publication = models.ForeignKey(
        Publication, on_delete=models.CASCADE, related_name="delivery_attempts"
    )

    class Action(models.TextChoices):
        PUBLISH = "publish", "Publish"
        RETRACT = "retract", "Remove"

    action = models.CharField(max_length=10, choices=Action.choices, default=Action.PUBLISH)
    ok = models.BooleanField()
    detail = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["at"]

    def __str__(self):
        outcome = "ok" if self.ok else "failed"
        return f"{self.action} {outcome}: {self.publication} at {self.at}"


class SandboxPost(models.Model):
    """What the built-in sandbox network shows on its feed."""

    account = models.ForeignKey(
        "approvals.SocialAccount", on_delete=models.PROTECT, related_name="sandbox_posts"
    )
    # The sandbox, like a network honouring Idempotency-Key, accepts one post per key.
    idempotency_key = models.CharField(max_length=64, unique=True)
    text = models.TextField()
    link = models.URLField(max_length=2000, blank=True)
    published_at = models.DateTimeField(auto_now_add=True)
    # Deleted by its author (a take-down): hidden from the feed, kept for the record.
    retracted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-published_at"]

    def __str__(self):
        return f"{self.account} #{self.pk}"
