from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Decision(models.Model):
    """One reviewer's verdict on one revision, bound to the content hash they saw."""

    class Outcome(models.TextChoices):
        APPROVE = "approve", "Approved"
        REQUEST_CHANGES = "request_changes", "Changes requested"
        REJECT = "reject", "Rejected"

    post = models.ForeignKey("approvals.Post", on_delete=models.CASCADE, related_name="decisions")
    step = models.ForeignKey(
        "approvals.ReviewStep", on_delete=models.PROTECT, related_name="decisions"
    )
    revision = models.ForeignKey(
        "approvals.Revision", on_delete=models.PROTECT, related_name="decisions"
    )
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="decisions"
    )
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    reason = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["step", "reviewer"], name="one_decision_per_reviewer_and_step"
            ),
            models.CheckConstraint(
                condition=Q(outcome="approve") | ~Q(reason=""),
                name="decision_reason_required_unless_approve",
            ),
        ]

    def __str__(self):
        return f"{self.get_outcome_display()} by {self.reviewer} on {self.revision}"


class ReviewStep(models.Model):
    """One gate of a revision's route, frozen when the revision is submitted."""

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting for an earlier stage"
        ACTIVE = "active", "Waiting for reviewers"
        APPROVED = "approved", "Approved"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        REJECTED = "rejected", "Rejected"
        CANCELLED = "cancelled", "Closed"

    post = models.ForeignKey("approvals.Post", on_delete=models.CASCADE, related_name="steps")
    revision = models.ForeignKey(
        "approvals.Revision", on_delete=models.PROTECT, related_name="steps"
    )
    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    quorum = models.PositiveSmallIntegerField(default=1)
    stage = models.PositiveSmallIntegerField(default=1)
    state = models.CharField(max_length=20, choices=State.choices, default=State.WAITING)
    due_hours = models.PositiveIntegerField(null=True, blank=True)
    business_hours = models.BooleanField(default=False)
    escalation_group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Why the step is there: the rules (and their versions) that required it.
    reasons = models.JSONField(default=list)
    allow_multiple_steps_per_reviewer = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["revision", "stage", "pk"]
        constraints = [
            # One open step per group and stage; a resubmission of the same revision opens new ones.
            models.UniqueConstraint(
                fields=["revision", "group", "stage"],
                condition=Q(state__in=["waiting", "active", "approved"]),
                name="one_open_step_per_group_and_stage",
            )
        ]
        indexes = [models.Index(fields=["state", "group"])]

    def __str__(self):
        return f"{self.group} ×{self.quorum} (stage {self.stage}) on {self.revision}"

    @property
    def is_overdue(self):
        return (
            self.state == self.State.ACTIVE
            and self.due_at is not None
            and self.due_at <= timezone.now()
        )

    @property
    def is_active(self):
        return self.state == self.State.ACTIVE

    @property
    def why(self):
        return "; ".join(f"{r['rule']} (v{r['version']})" for r in self.reasons)


class StepClaim(models.Model):
    """A reviewer has taken one of the approvals a step still needs ("in review by Ana")."""

    step = models.ForeignKey(ReviewStep, on_delete=models.CASCADE, related_name="claims")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="step_claims"
    )
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["step", "reviewer"], name="one_claim_per_reviewer")
        ]

    def __str__(self):
        return f"{self.reviewer} on {self.step} since {self.claimed_at:%H:%M}"

    @property
    def expires_at(self):
        return self.claimed_at + timezone.timedelta(minutes=settings.REVIEWFLOW["CLAIM_MINUTES"])

    @property
    def is_live(self):
        return self.expires_at > timezone.now()
