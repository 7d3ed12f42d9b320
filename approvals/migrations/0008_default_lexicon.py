"""The default French and English financial-promotion lexicon; compliance admins edit it after.

The entries live in _lexicon_default.py beside this file (see there for the choices made).
Reversing the migration deletes the entries it created, found by term and language.
"""

from django.db import migrations

from approvals.migrations._lexicon_default import ENTRIES


def create(apps, schema_editor):
    LexiconEntry = apps.get_model("approvals", "LexiconEntry")
    for entry in ENTRIES:
        LexiconEntry.objects.get_or_create(
            term=entry["term"],
            language=entry["language"],
            defaults={key: value for key, value in entry.items() if key not in ("term", "language")}
            | {"enabled": True},
        )


def remove(apps, schema_editor):
    LexiconEntry = apps.get_model("approvals", "LexiconEntry")
    for language in {entry["language"] for entry in ENTRIES}:
        LexiconEntry.objects.filter(
            language=language,
            term__in=[entry["term"] for entry in ENTRIES if entry["language"] == language],
        ).delete()


class Migration(migrations.Migration):
    dependencies = [("approvals", "0007_default_network_rules")]

    operations = [migrations.RunPython(create, remove)]
