from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('approvals', '0011_delivery_engine'),
    ]

    operations = [
        migrations.AlterField(
            model_name='notification',
            name='kind',
            field=models.CharField(choices=[('review_requested', 'Review requested'), ('decision', 'Decision'), ('escalation', 'Overdue step'), ('publish_at_risk', 'Publish time at risk'), ('approval_expiring', 'Approval expiring'), ('reconnect_needed', 'Account reconnect needed')], max_length=20),
        ),
    ]
