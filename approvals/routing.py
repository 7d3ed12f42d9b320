"""Approval rules -> the route for one revision: which groups must approve, in which order."""

from dataclasses import dataclass, field

from django.utils import timezone

from . import config
from .conditions import ConditionError, Facts
from .duetime import due_at
from .models import ApprovalRule, ReviewStep, SocialAccount


class NoRoute(Exception):
    """No enabled rule routes this revision; it must not be submitted (never routed to nobody)."""


@dataclass
class PlannedStep:
    group: object
    quorum: int
    stage: int
    due_hours: int | None
    business_hours: bool
    escalation_group: object
    allow_multiple_steps_per_reviewer: bool
    reasons: list = field(default_factory=list)

    def as_json(self):
        return {
            "group": self.group.name,
            "quorum": self.quorum,
            "stage": self.stage,
            "due_hours": self.due_hours,
            "business_hours": self.business_hours,
            "escalation_group": self.escalation_group.name if self.escalation_group else None,
            "rules": self.reasons,
        }


@dataclass
class Route:
    steps: list
    matched: list  # the rules whose condition matched, in priority order
    exempted_by: ApprovalRule | None = None

    def as_json(self):
        return {
            "review_required": bool(self.steps),
            "exempted_by": self.exempted_by.name if self.exempted_by else None,
            "matched_rules": [{"rule": r.name, "version": r.version} for r in self.matched],
            "steps": [step.as_json() for step in self.steps],
        }


def facts_for(*, team, accounts, text, link="", tags=(), findings=()):
    return Facts(
        team=team.name,
        networks=frozenset(a.network for a in accounts),
        account_ids=frozenset(a.pk for a in accounts),
        tags=frozenset(t.name for t in tags),
        has_link=bool(link),
        has_media=False,  # media arrive with the publishing connectors (issue 5)
        length=len(text),
        findings=tuple(findings),
    )


def facts_for_revision(revision, findings=None):
    """`findings`: the policy Findings just computed for this revision (anything with `category`
    and `severity`); None reads the ones frozen with it."""
    if findings is None:
        findings = revision.findings.values_list("category", "severity")
    else:
        findings = [(f.category, f.severity) for f in findings]
    return facts_for(
        team=revision.post.team,
        accounts=list(revision.accounts.all()),
        text=revision.text,
        link=revision.link,
        tags=list(revision.tags.all()),
        findings=findings,
    )


def compute_route(facts, now=None):
    """The route of the configuration's enabled rules (the snapshot pinned by the caller, if
    any: see `config.using`)."""
    matched = []
    for rule in config.current().rules:
        try:
            if rule.matches(facts):
                matched.append(rule)
        except ConditionError as error:
            # Fail closed: a broken rule must not let a post through with less review.
            raise NoRoute(
                f"Approval rule “{rule.name}” is misconfigured ({error}); ask a compliance admin."
            ) from None
    if not matched:
        raise NoRoute("No approval rule applies to this post; ask a compliance admin.")
    reviewing = [rule for rule in matched if rule.requires_review]
    exempting = [rule for rule in matched if not rule.requires_review]
    if exempting and (
        not reviewing or exempting[0].priority < min(rule.priority for rule in reviewing)
    ):
        return Route(steps=[], matched=matched, exempted_by=exempting[0])

    merged, now = {}, now or timezone.now()
    for rule in reviewing:
        for rule_step in rule.steps.all():
            key = (rule_step.group_id, rule_step.stage)
            reason = {"rule_id": rule.pk, "rule": rule.name, "version": rule.version}
            step = merged.get(key)
            if step is None:
                merged[key] = PlannedStep(
                    group=rule_step.group,
                    quorum=rule_step.quorum,
                    stage=rule_step.stage,
                    due_hours=rule_step.due_hours,
                    business_hours=rule_step.business_hours,
                    escalation_group=rule_step.escalation_group,
                    allow_multiple_steps_per_reviewer=rule.allow_multiple_steps_per_reviewer,
                    reasons=[reason],
                )
                continue
            # Two rules, one group, one stage: the stricter wins.
            step.quorum = max(step.quorum, rule_step.quorum)
            # The earlier deadline wins, compared as real moments (business vs calendar hours).
            if rule_step.due_hours is not None and (
                step.due_hours is None
                or due_at(now, rule_step.due_hours, rule_step.business_hours)
                < due_at(now, step.due_hours, step.business_hours)
            ):
                step.due_hours, step.business_hours = rule_step.due_hours, rule_step.business_hours
            step.escalation_group = step.escalation_group or rule_step.escalation_group
            step.allow_multiple_steps_per_reviewer &= rule.allow_multiple_steps_per_reviewer
            step.reasons.append(reason)
    if not merged:
        names = ", ".join(rule.name for rule in reviewing)
        raise NoRoute(f"The rules that apply ({names}) require review but name no reviewers.")
    steps = sorted(merged.values(), key=lambda s: (s.stage, s.group.name))
    return Route(steps=steps, matched=matched)


def route_for_revision(revision, findings=None):
    """The route of a revision; pass the `findings` the caller has just computed (see
    `facts_for_revision`) to spare reading them back."""
    return compute_route(facts_for_revision(revision, findings))


def simulate(*, author, account_ids, text, link="", tag_names=()):
    """The route a post would get, for the admin simulator and `simulate_route`.

    Text and link are cleaned as a submitted revision's are, so length tests see the same length.
    """
    from .models import Tag
    from .text import clean_text

    team = author.membership.team
    accounts = list(SocialAccount.objects.filter(pk__in=account_ids))
    tags = list(Tag.objects.filter(name__in=tag_names))
    text, link = clean_text(text or "").strip(), (link or "").strip()
    return compute_route(facts_for(team=team, accounts=accounts, text=text, link=link, tags=tags))


def freeze(post, revision, route, now=None):
    """Record the route's steps for this revision, its first stage open; returns those steps."""
    now = now or timezone.now()
    first = min((planned.stage for planned in route.steps), default=None)
    steps = ReviewStep.objects.bulk_create(
        ReviewStep(
            post=post,
            revision=revision,
            group=planned.group,
            quorum=planned.quorum,
            stage=planned.stage,
            due_hours=planned.due_hours,
            business_hours=planned.business_hours,
            escalation_group=planned.escalation_group,
            allow_multiple_steps_per_reviewer=planned.allow_multiple_steps_per_reviewer,
            reasons=planned.reasons,
            **_opened(planned, now) if planned.stage == first else {},
        )
        for planned in route.steps
    )
    return [step for step in steps if step.state == ReviewStep.State.ACTIVE]


def _opened(step, now):
    """The fields of a step that opens now."""
    return {
        "state": ReviewStep.State.ACTIVE,
        "activated_at": now,
        "due_at": due_at(now, step.due_hours, step.business_hours),
    }


def activate_next_stage(revision, now=None):
    """Open the lowest stage still waiting; returns the steps it opened."""
    now = now or timezone.now()
    waiting = ReviewStep.objects.filter(revision=revision, state=ReviewStep.State.WAITING)
    stage = waiting.order_by("stage").values_list("stage", flat=True).first()
    if stage is None:
        return []
    opened = list(waiting.filter(stage=stage).select_related("group"))
    for step in opened:
        for name, value in _opened(step, now).items():
            setattr(step, name, value)
        step.save(update_fields=["state", "activated_at", "due_at"])
    return opened
