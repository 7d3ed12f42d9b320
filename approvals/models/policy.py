"""Configuration of the automated checks (lexicon, disclaimers, network rules) and their results."""

from django.db import models


class Category(models.TextChoices):
    GUARANTEE = "guarantee", "Guarantee or promise of return"
    RISK_DENIAL = "risk_denial", "Risk denial"
    SUPERLATIVE = "superlative", "Superlative"
    TESTIMONIAL = "testimonial", "Testimonial or review"
    TAX_LEGAL = "tax_legal", "Tax or legal advice"
    CRYPTO = "crypto", "Crypto-assets"
    URGENCY = "urgency", "Urgency pressure"
    PERFORMANCE = "performance", "Performance wording"
    DISCLAIMER = "disclaimer", "Required disclaimer"
    NETWORK = "network", "Network rule"
    LINK = "link", "Link rule"


class Severity(models.TextChoices):
    BLOCK = "block", "Blocks submission"
    WARN = "warn", "Warning for reviewers"
    INFO = "info", "Information"


class Language(models.TextChoices):
    FRENCH = "fr", "French"
    ENGLISH = "en", "English"


class LexiconEntry(models.Model):
    """A term or pattern compliance wants flagged, with why and what to write instead."""

    term = models.CharField(
        max_length=200,
        help_text="As a person writes it; case, accents, plural and feminine forms, spacing and "
        "look-alike letters are matched automatically. A trailing * matches any word ending.",
    )
    language = models.CharField(max_length=2, choices=Language.choices)
    category = models.CharField(max_length=20, choices=Category.choices)
    severity = models.CharField(max_length=5, choices=Severity.choices, default=Severity.WARN)
    explanation = models.TextField(help_text="Why this wording is a problem, for the advisor.")
    alternative = models.TextField(blank=True, help_text="What to write instead.")
    exceptions = models.TextField(
        blank=True,
        help_text="Phrases, one per line, in which the term is innocent (e.g. “garantie décès”).",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["language", "category", "term"]
        verbose_name_plural = "lexicon entries"
        constraints = [
            models.UniqueConstraint(fields=["term", "language"], name="lexicon_term_unique")
        ]

    def __str__(self):
        return f"{self.term} ({self.language}, {self.category})"


class Disclaimer(models.Model):
    """A legal mention that posts must carry when its conditions hold."""

    name = models.CharField(max_length=120, unique=True)
    text = models.TextField(help_text="The mention, exactly as it must appear.")
    language = models.CharField(max_length=2, choices=Language.choices)
    networks = models.JSONField(
        default=list,
        blank=True,
        help_text='Networks it applies to, e.g. ["x", "linkedin"]; empty: all.',
    )
    teams = models.ManyToManyField("approvals.Team", blank=True, help_text="Empty: all teams.")
    categories = models.JSONField(
        default=list,
        blank=True,
        help_text='Required when the text has a finding of these categories, e.g. ["performance"]; '
        "empty: required on every post it applies to.",
    )
    link_url = models.URLField(
        blank=True, help_text="Where the full mention is published, for networks short of space."
    )
    link_allowed_on = models.JSONField(
        default=list,
        blank=True,
        help_text='Networks where a link to the full mention is accepted instead, e.g. ["x"].',
    )
    severity = models.CharField(max_length=5, choices=Severity.choices, default=Severity.BLOCK)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class NetworkRule(models.Model):
    """How one network counts and limits a post."""

    network = models.CharField(max_length=30, unique=True)
    max_length = models.PositiveIntegerField(help_text="Characters, as the network counts them.")
    weighted = models.BooleanField(
        default=False, help_text="X's weighted count: CJK and emoji count double."
    )
    url_length = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Every URL counts as this many characters (X, Mastodon: 23).",
    )
    max_hashtags = models.PositiveIntegerField(null=True, blank=True)
    max_mentions = models.PositiveIntegerField(null=True, blank=True)
    allowed_domains = models.TextField(
        blank=True, help_text="One per line; when set, links may only go there (subdomains too)."
    )
    denied_domains = models.TextField(blank=True, help_text="One per line (subdomains too).")
    refuse_shorteners = models.BooleanField(
        default=True, help_text="Refuse bit.ly and the like: reviewers must see where a link goes."
    )

    class Meta:
        ordering = ["network"]

    def __str__(self):
        return self.network


class RevisionFinding(models.Model):
    """A finding frozen with the revision it was found on, when the revision was submitted."""

    revision = models.ForeignKey(
        "approvals.Revision", on_delete=models.CASCADE, related_name="findings"
    )
    code = models.CharField(max_length=60)
    category = models.CharField(max_length=20, choices=Category.choices)
    severity = models.CharField(max_length=5, choices=Severity.choices)
    message = models.TextField()
    fix = models.TextField(blank=True)
    start = models.PositiveIntegerField(null=True, blank=True)
    end = models.PositiveIntegerField(null=True, blank=True)
    network = models.CharField(max_length=30, blank=True)

    class Meta:
        ordering = ["revision", "start", "pk"]

    def __str__(self):
        return f"{self.severity} {self.code} on {self.revision}"


class ConfigVersion(models.Model):
    """One row whose value database triggers set to a new random number on any write to the
    configuration that the checks and routing read: `approvals.config` rebuilds its cached
    snapshot when it differs (random, so a rolled-back change's value is never reused)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="configversion_one_row")
        ]

    def __str__(self):
        return str(self.value)
