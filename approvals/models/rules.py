from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models

ROUTING_HELP = (
    "Every enabled rule whose condition matches a submitted revision contributes its steps. "
    "When two rules require the same group in the same stage, the stricter (larger) quorum "
    "wins and the earliest due time is kept. Steps of one stage run in parallel; stages run "
    "in order. A rule that requires no review (for example unchanged pre-approved templates) "
    "empties the route only when it has a higher priority (smaller number) than every "
    "matching rule that requires review. If nothing matches, the post cannot be submitted."
)


class Tag(models.Model):
    """A label the advisor chooses (product, campaign) that approval rules can test."""

    class Kind(models.TextChoices):
        PRODUCT = "product", "Product"
        CAMPAIGN = "campaign", "Campaign"
        OTHER = "other", "Other"

    name = models.CharField(max_length=60, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.PRODUCT)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self):
        return self.name


class ApprovalRule(models.Model):
    """Admin configuration: a condition on a revision and the review steps it requires."""

    name = models.CharField(max_length=120, unique=True)
    description = models.TextField(
        blank=True, help_text="Why this rule exists; shown to advisors and reviewers."
    )
    priority = models.PositiveIntegerField(
        default=100, help_text="Smaller numbers first. Matters for rules that require no review."
    )
    enabled = models.BooleanField(default=True)
    condition = models.JSONField(
        default=dict,
        blank=True,
        help_text=(
            "Empty ({}) matches every post. Otherwise one test, or all/any/not of tests, e.g. "
            '{"all": [{"network": ["webhook"]}, {"not": {"team": ["Paris branch"]}}]}. '
            "Tests: network, account (ids), team (names), tag (names), has_link, has_media, "
            "length_over, finding (category and/or severity)."
        ),
    )
    requires_review = models.BooleanField(
        default=True,
        help_text="Untick only for content that needs no review: this rule then routes to nobody.",
    )
    allow_multiple_steps_per_reviewer = models.BooleanField(
        default=False,
        help_text="Let one reviewer approve several steps of the same revision.",
    )
    version = models.PositiveIntegerField(default=1, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "name"]

    def __str__(self):
        return self.name

    def clean(self):
        from approvals.conditions import ConditionError, parse

        try:
            parse(self.condition)
        except ConditionError as error:
            raise ValidationError({"condition": str(error)}) from None

    def matches(self, facts):
        from approvals.conditions import parse

        return parse(self.condition).matches(facts)


class RuleStep(models.Model):
    """One gate a rule requires: a reviewer group, its quorum, its stage and its due time."""

    rule = models.ForeignKey(ApprovalRule, on_delete=models.CASCADE, related_name="steps")
    group = models.ForeignKey(
        Group, on_delete=models.PROTECT, related_name="+", help_text="Who reviews."
    )
    quorum = models.PositiveSmallIntegerField(
        default=1, help_text="Distinct approvals needed from this group."
    )
    stage = models.PositiveSmallIntegerField(
        default=1, help_text="Steps of one stage run in parallel; stages run in order."
    )
    due_hours = models.PositiveIntegerField(
        null=True, blank=True, help_text="Hours to decide once the step is active; empty: no limit."
    )
    business_hours = models.BooleanField(
        default=False, help_text="Count only business hours (see REVIEWFLOW_BUSINESS_HOURS)."
    )
    escalation_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Added to the step when it is overdue.",
    )

    class Meta:
        ordering = ["rule", "stage", "pk"]
        constraints = [
            models.CheckConstraint(condition=models.Q(quorum__gte=1), name="rulestep_quorum_min_1"),
            models.CheckConstraint(condition=models.Q(stage__gte=1), name="rulestep_stage_min_1"),
        ]

    def __str__(self):
        return f"{self.group} ×{self.quorum}, stage {self.stage}"
