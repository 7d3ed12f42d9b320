"""The lease a runner holds on the notifications it is mailing (approvals.notify._claim)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0014_config_version"),
    ]

    operations = [
        migrations.AddField(
            model_name="notification",
            name="sending_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
