"""Database triggers that refuse UPDATE and DELETE (and TRUNCATE on PostgreSQL) on the ledger."""

from django.db import migrations


def install(apps, schema_editor):
    from approvals.ledger import set_append_only

    set_append_only(schema_editor.connection, True)


def remove(apps, schema_editor):
    from approvals.ledger import set_append_only

    set_append_only(schema_editor.connection, False)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0001_initial")]

    operations = [migrations.RunPython(install, remove)]
