"""The configuration's version row, and the triggers that change it on any write to the tables
the policy checks and routing read (see approvals.config)."""

import secrets

from django.db import migrations, models

# As of this migration; a later table gets its triggers from a later migration.
TABLES = (
    "approvals_approvalrule",
    "approvals_rulestep",
    "auth_group",
    "approvals_networkrule",
    "approvals_lexiconentry",
    "approvals_disclaimer",
    "approvals_disclaimer_teams",
    "approvals_team",
)


def create(apps, schema_editor):
    """The one row (idempotent: tests/conftest.py puts it back after a flush)."""
    ConfigVersion = apps.get_model("approvals", "ConfigVersion")
    ConfigVersion.objects.get_or_create(id=1, defaults={"value": secrets.randbits(63)})


def install(apps, schema_editor):
    from approvals.config import set_triggers

    set_triggers(schema_editor.connection, True, TABLES)


def remove(apps, schema_editor):
    from approvals.config import set_triggers

    set_triggers(schema_editor.connection, False, TABLES)
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS approvals_config_changed()")


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0013_ledger_head"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.CreateModel(
            name="ConfigVersion",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False),
                ),
                ("value", models.BigIntegerField(default=0)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("id", 1)), name="configversion_one_row"
                    )
                ],
            },
        ),
        migrations.RunPython(create, migrations.RunPython.noop),
        migrations.RunPython(install, remove),
    ]
