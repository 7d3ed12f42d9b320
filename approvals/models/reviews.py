from django.conf import settings
from django.db import models
from django.db.models import Q


class Decision(models.Model):
    """One reviewer's verdict on one revision, bound to the content hash they saw."""

    class Outcome(models.TextChoices):
        APPROVE = "approve", "Approved"
        REQUEST_CHANGES = "request_changes", "Changes requested"
        REJECT = "reject", "Rejected"

    post = models.ForeignKey("approvals.Post", on_delete=models.CASCADE, related_name="decisions")
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
                fields=["revision", "reviewer"], name="one_decision_per_reviewer_and_revision"
            ),
            models.CheckConstraint(
                condition=Q(outcome="approve") | ~Q(reason=""),
                name="decision_reason_required_unless_approve",
            ),
        ]

    def __str__(self):
        return f"{self.get_outcome_display()} by {self.reviewer} on {self.revision}"
