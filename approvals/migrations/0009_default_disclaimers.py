"""Default required disclaimers, French and English; compliance admins edit them in the admin.

Performance wording needs the past-performance warning (AMF, FCA, SEC marketing rule); a promise
of return or a denial of risk needs the capital-loss warning; crypto-assets need their risk
warning (AMF for French posts, the FCA's wording for English ones).
"""

from django.db import migrations

DISCLAIMERS = [
    # name, language, text, categories, severity
    (
        "Performances passées (FR)",
        "fr",
        "Les performances passées ne préjugent pas des performances futures.",
        ["performance"],
        "block",
    ),
    (
        "Past performance (EN)",
        "en",
        "Past performance is not a reliable indicator of future results.",
        ["performance"],
        "block",
    ),
    (
        "Risque de perte en capital (FR)",
        "fr",
        "Investir comporte un risque de perte en capital.",
        ["guarantee", "risk_denial"],
        "block",
    ),
    (
        "Capital at risk (EN)",
        "en",
        "Investing involves risk, including possible loss of capital.",
        ["guarantee", "risk_denial"],
        "block",
    ),
    (
        "Crypto-actifs (FR)",
        "fr",
        "Les crypto-actifs sont risqués : vous pouvez perdre tout ou partie de votre capital.",
        ["crypto"],
        "block",
    ),
    (
        "Crypto-assets (EN)",
        "en",
        "Don't invest unless you're prepared to lose all the money you invest. "
        "This is a high-risk investment.",
        ["crypto"],
        "block",
    ),
]


def create(apps, schema_editor):
    Disclaimer = apps.get_model("approvals", "Disclaimer")
    for name, language, text, categories, severity in DISCLAIMERS:
        Disclaimer.objects.get_or_create(
            name=name,
            defaults={
                "language": language,
                "text": text,
                "categories": categories,
                "severity": severity,
                "enabled": True,
            },
        )


def remove(apps, schema_editor):
    apps.get_model("approvals", "Disclaimer").objects.filter(
        name__in=[disclaimer[0] for disclaimer in DISCLAIMERS]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("approvals", "0008_default_lexicon")]

    operations = [migrations.RunPython(create, remove)]
