"""Each network's counting rules, as their public documentation states them; admins can edit."""

from django.db import migrations

RULES = [
    # network, max_length, weighted, url_length, max_hashtags, max_mentions
    ("x", 280, True, 23, 3, 5),
    ("linkedin", 3000, False, None, 5, 10),
    ("facebook", 63206, False, None, 10, 10),
    ("mastodon", 500, False, 23, 5, 10),
    ("sandbox", 500, False, None, 5, 10),
    ("webhook", 10000, False, None, None, None),
]


def create(apps, schema_editor):
    NetworkRule = apps.get_model("approvals", "NetworkRule")
    for network, max_length, weighted, url_length, hashtags, mentions in RULES:
        NetworkRule.objects.get_or_create(
            network=network,
            defaults={
                "max_length": max_length,
                "weighted": weighted,
                "url_length": url_length,
                "max_hashtags": hashtags,
                "max_mentions": mentions,
                "refuse_shorteners": True,
            },
        )


def remove(apps, schema_editor):
    apps.get_model("approvals", "NetworkRule").objects.filter(
        network__in=[rule[0] for rule in RULES]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("approvals", "0006_policy")]

    operations = [migrations.RunPython(create, remove)]
