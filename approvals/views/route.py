"""The review route of a post's current revision, as the post page shows it.

A fixed number of queries whatever the number of steps, decisions and claims: the steps with
their groups, their decisions with reviewers, their claims with reviewers (only when a step has
some), and the rules they cite.
"""

from dataclasses import dataclass, field

from approvals.access import claims_of, read_claims, step_has_claims
from approvals.models import ApprovalRule, Decision, ReviewStep

ROUTE_EVENTS = ("post.submitted", "post.approval_voided")


@dataclass
class StepView:
    step: ReviewStep
    approvals: list  # approving decisions, oldest first
    other_decisions: list  # requests for changes and rejections
    live_claims: list  # claims that have not lapsed, oldest first
    rules: list  # why the step is there: one dict per rule
    missing: str = ""
    waits_for: int | None = None  # the stage that must be approved first

    @property
    def approved_count(self):
        return len(self.approvals)


@dataclass
class StageView:
    number: int
    steps: list = field(default_factory=list)

    @property
    def parallel(self):
        return len(self.steps) > 1


@dataclass
class RouteView:
    stages: list
    exemption: dict | None = None  # the rule that made review unnecessary

    @property
    def steps(self):
        return [view for stage in self.stages for view in stage.steps]

    def step(self, step_id):
        return next((view for view in self.steps if view.step.pk == step_id), None)


def route_view(post, revision, timeline, decisions):
    """The steps of `revision` by stage, with who approved, what is missing and why.

    `timeline` is the post's ledger entries and `decisions` its decisions, oldest first, with
    their reviewer (both already fetched for the page); the route JSON of the submission says
    which rule exempted a route without steps.
    """
    steps = list(
        ReviewStep.objects.filter(post=post, revision=revision)
        .select_related("group", "escalation_group")
        .annotate(has_claims=step_has_claims())
        .order_by("stage", "group__name", "pk")
    )
    read_claims(steps)
    by_step = {}
    for decision in decisions:
        by_step.setdefault(decision.step_id, []).append(decision)
    exemption = None if steps else _exemption(revision, timeline)
    rule_ids = {reason.get("rule_id") for step in steps for reason in step.reasons}
    rule_names = {exemption["rule"]} if exemption else set()
    rules = (
        list(
            ApprovalRule.objects.filter(pk__in=rule_ids - {None})
            | ApprovalRule.objects.filter(name__in=rule_names)
        )
        if rule_ids or rule_names
        else []
    )
    by_id, by_name = {r.pk: r for r in rules}, {r.name: r for r in rules}
    if exemption:
        rule = by_name.get(exemption["rule"])
        exemption["description"] = rule.description if rule else ""

    stages = []
    for step in steps:
        if not stages or stages[-1].number != step.stage:
            stages.append(StageView(step.stage))
        stages[-1].steps.append(_step_view(step, by_step.get(step.pk, []), by_id, stages))
    return RouteView(stages=stages, exemption=exemption)


def _step_view(step, decisions, rules_by_id, stages):
    view = StepView(
        step=step,
        approvals=[d for d in decisions if d.outcome == Decision.Outcome.APPROVE],
        other_decisions=[d for d in decisions if d.outcome != Decision.Outcome.APPROVE],
        live_claims=[claim for claim in claims_of(step) if claim.is_live],
        rules=[_rule_reason(reason, rules_by_id) for reason in step.reasons],
    )
    earlier = [stage.number for stage in stages if stage.number < step.stage]
    if step.state == ReviewStep.State.WAITING and earlier:
        view.waits_for = earlier[-1]
    if step.state in (ReviewStep.State.ACTIVE, ReviewStep.State.WAITING):
        left = max(step.quorum - view.approved_count, 0)
        groups = step.group.name
        if step.escalated_at is not None and step.escalation_group is not None:
            groups += f" or {step.escalation_group.name}"
        plural = "approval" if left == 1 else "approvals"
        view.missing = f"{left} more {plural} from {groups}"
    return view


def _rule_reason(reason, rules_by_id):
    rule = rules_by_id.get(reason.get("rule_id"))
    return {
        "name": reason.get("rule", ""),
        "version": reason.get("version"),
        "description": rule.description if rule else "",
        "deleted": rule is None,
        "current_version": rule.version if rule else None,
        "changed": rule is not None and rule.version != reason.get("version"),
    }


def _exemption(revision, timeline):
    """The rule that made review of `revision` unnecessary, from its ledger entries, or None."""
    for entry in reversed(timeline):
        payload = entry.payload or {}
        if payload.get("revision") != revision.number:
            continue
        if entry.event == "post.approved" and payload.get("exempted_by"):
            return {"rule": payload["exempted_by"], "at": entry.created_at}
        if entry.event in ROUTE_EVENTS and isinstance(payload.get("route"), dict):
            name = payload["route"].get("exempted_by")
            return {"rule": name, "at": entry.created_at} if name else None
    return None
