from django.conf import settings
from django.db import models
from django.utils import timezone


class LedgerEntry(models.Model):
    """One append-only, hash-chained record of an event: the audit trail and the archive.

    No foreign keys: a deleted user or post must never require rewriting the ledger.
    Database triggers refuse UPDATE and DELETE (migration 0002); approvals.ledger appends.
    """

    seq = models.PositiveBigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor = models.CharField(max_length=150, help_text="Username, or 'system'.")
    event = models.CharField(max_length=60, db_index=True)
    post_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]
        verbose_name_plural = "ledger entries"

    def __str__(self):
        return f"#{self.seq} {self.event} by {self.actor}"


class LedgerHead(models.Model):
    """The chain's head, one row: the last entry's seq, hash and prev_hash.

    approvals.ledger.append advances it and inserts the entry from it; its row lock serializes
    appenders until commit. Mutable by design: a tampered head shows at the next entry, whose
    prev_hash or seq no longer follows the previous entry (verify() names it).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seq = models.PositiveBigIntegerField(default=0, help_text="0 while the ledger is empty.")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="ledger_head_single_row"),
        ]

    def __str__(self):
        return f"ledger head #{self.seq}"


class LedgerExport(models.Model):
    """A copy of the ledger (all of it, a period, or one post's entries) for an auditor, written
    to a file by a worker: years of ledger take longer than a web request may last. The request
    is itself a ledger entry (ledger.exported); the file stays until a compliance admin deletes
    it, and each download is recorded too."""

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        WRITING = "writing", "being written"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    since = models.DateTimeField(null=True, blank=True, help_text="Entries from this moment.")
    until = models.DateTimeField(null=True, blank=True, help_text="Entries before this moment.")
    post_id = models.BigIntegerField(null=True, blank=True, help_text="Only this post's entries.")
    state = models.CharField(max_length=10, choices=State, default=State.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    file = models.FileField(upload_to="ledger-exports/", blank=True)  # MEDIA_ROOT: never public
    entries = models.PositiveBigIntegerField(null=True, blank=True)
    last_hash = models.CharField(max_length=64, blank=True)
    size = models.PositiveBigIntegerField(null=True, blank=True, help_text="Bytes.")
    sha256 = models.CharField(
        max_length=64, blank=True, help_text="The file's: an auditor's copy must have the same."
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Workers that started it.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self):
        return f"ledger export #{self.pk}"
