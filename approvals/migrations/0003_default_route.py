"""Ship a catch-all rule, so that no post is ever routed to nobody."""

from django.db import migrations

GROUP = "Compliance reviewers"
RULE = "Default review"


def create(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    ApprovalRule = apps.get_model("approvals", "ApprovalRule")
    RuleStep = apps.get_model("approvals", "RuleStep")
    group, _ = Group.objects.get_or_create(name=GROUP)
    rule, created = ApprovalRule.objects.get_or_create(
        name=RULE,
        defaults={
            "description": "Every post is reviewed by compliance before it is published.",
            "priority": 1000,
            "condition": {},
        },
    )
    if created:
        RuleStep.objects.create(
            rule=rule, group=group, quorum=1, stage=1, due_hours=8, business_hours=True
        )


def remove(apps, schema_editor):
    apps.get_model("approvals", "ApprovalRule").objects.filter(name=RULE).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0002_ledger_append_only"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create, remove)]
