from django.db import models


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
