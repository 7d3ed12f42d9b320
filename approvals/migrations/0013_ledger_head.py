"""The ledger's head row, so that an append is one statement (see approvals.ledger.append)."""

from django.db import migrations, models

GENESIS_HASH = "0" * 64


def init_head(apps, schema_editor):
    """Point the head at the chain's last entry, or at genesis when the ledger is empty."""
    LedgerEntry = apps.get_model("approvals", "LedgerEntry")
    LedgerHead = apps.get_model("approvals", "LedgerHead")
    db = schema_editor.connection.alias
    last = LedgerEntry.objects.using(db).order_by("-seq").first()
    LedgerHead.objects.using(db).update_or_create(
        id=1,
        defaults={
            "seq": last.seq if last else 0,
            "prev_hash": last.prev_hash if last else GENESIS_HASH,
            "hash": last.hash if last else GENESIS_HASH,
        },
    )


class Migration(migrations.Migration):
    dependencies = [("approvals", "0012_notification_reconnect_needed")]

    operations = [
        migrations.CreateModel(
            name="LedgerHead",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(
                        default=1, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "seq",
                    models.PositiveBigIntegerField(
                        default=0, help_text="0 while the ledger is empty."
                    ),
                ),
                ("prev_hash", models.CharField(max_length=64)),
                ("hash", models.CharField(max_length=64)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("id", 1)), name="ledger_head_single_row"
                    )
                ],
            },
        ),
        migrations.RunPython(init_head, migrations.RunPython.noop),
    ]
