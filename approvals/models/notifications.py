from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class NotificationPreference(models.Model):
    """How one person wants to be emailed: one mail per event, or one digest a day."""

    class Mode(models.TextChoices):
        IMMEDIATE = "immediate", "Immediately, one email per event"
        DIGEST = "digest", "Once a day, in one digest email"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.IMMEDIATE)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.user}: {self.get_mode_display()}"

    @classmethod
    def mode_for(cls, user):
        mode = cls.objects.filter(user=user).values_list("mode", flat=True).first()
        return mode or cls.Mode.IMMEDIATE


class Notification(models.Model):
    """One message to one person: the outbox. A row is mailed, then marked sent."""

    class Kind(models.TextChoices):
        REVIEW_REQUESTED = "review_requested", "Review requested"
        DECISION = "decision", "Decision"
        ESCALATION = "escalation", "Overdue step"
        PUBLISH_AT_RISK = "publish_at_risk", "Publish time at risk"
        APPROVAL_EXPIRING = "approval_expiring", "Approval expiring"
        RECONNECT_NEEDED = "reconnect_needed", "Account reconnect needed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,  # notification_user_recent, below, leads with the user
    )
    post = models.ForeignKey(
        "approvals.Post", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=Kind.choices)
    subject = models.CharField(max_length=255)
    body = models.TextField()
    # The recipient's choice when the row was written: digest rows wait for the daily digest.
    digest = models.BooleanField(default=False)
    # Written during a burst to this person (they were emailed moments ago): mailed with the
    # rest of the burst, in one mail, by notify.send_gathered.
    gathered = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Set while a runner mails the row (approvals.notify._claim); past it, another may take it.
    sending_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(
                fields=["digest", "user", "created_at"],
                condition=Q(sent_at__isnull=True),
                name="notification_unsent",
            ),
            # Whether a person was emailed moments ago (notify._notify): their newest rows.
            models.Index(fields=["user", "created_at"], name="notification_user_recent"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} to {self.user}: {self.subject}"
