"""Automated compliance checks, one entry point: check(subject) -> findings.

Each check is a small class in its own module, listed once in CHECKS; adding one touches nothing
else. Checks run in order, and a later one can read what earlier ones found (a required
disclaimer depends on the lexicon's categories).
"""

from django.utils.module_loading import import_string

from .base import Category, Check, Finding, Severity, Subject

CHECKS = [
    "approvals.policy.lexicon.LexiconCheck",
    "approvals.policy.testimonials.TestimonialCheck",
    # Helpers of issue 4 register their checks here, in this order:
    # lexicon, testimonials, network rules (length, links, hashtags and mentions), disclaimers.
    # (the lexicon and testimonial checks go here, above the network rules)
    "approvals.policy.network.NetworkLengthCheck",
    "approvals.policy.links.LinkCheck",
    "approvals.policy.network.HashtagMentionCheck",
    "approvals.policy.disclaimers.DisclaimerCheck",  # last: reads the categories found above
]

SEVERITY_ORDER = {Severity.BLOCK: 0, Severity.WARN: 1, Severity.INFO: 2}


def check(subject: Subject) -> list[Finding]:
    from approvals import config

    found = []
    with config.using():  # every check reads one snapshot: the version is read once
        for path in CHECKS:
            found.extend(import_string(path)().run(subject, list(found)))
    return sorted(
        _without_nested(found),
        key=lambda f: (f.start is None, f.start or 0, SEVERITY_ORDER.get(f.severity, 9), f.code),
    )


def _without_nested(found):
    """Drop a finding whose span lies inside another of the same category, at least as severe:
    "5 étoiles" (lexicon) inside "noté 5 étoiles" (testimonials) is one problem, said once."""

    def covers(outer, inner):
        return (
            outer is not inner
            and outer.category == inner.category
            and outer.start is not None
            and inner.start is not None
            and outer.start <= inner.start
            and inner.end <= outer.end
            and (outer.start, outer.end) != (inner.start, inner.end)
            and SEVERITY_ORDER.get(outer.severity, 9) <= SEVERITY_ORDER.get(inner.severity, 9)
        )

    return [f for f in found if not any(covers(other, f) for other in found)]


def subject_for(*, text, link="", accounts=(), team=None, tags=()):
    return Subject(
        text=text,
        link=link or "",
        networks=frozenset(a.network for a in accounts),
        team=team.name if team is not None else "",
        tags=frozenset(t.name for t in tags),
    )


def check_revision(revision):
    return check(
        subject_for(
            text=revision.text,
            link=revision.link,
            accounts=list(revision.accounts.all()),
            team=revision.post.team,
            tags=list(revision.tags.all()),
        )
    )


def blocking(findings):
    return [f for f in findings if f.severity == Severity.BLOCK]


__all__ = [
    "CHECKS",
    "Category",
    "Check",
    "Finding",
    "Severity",
    "Subject",
    "blocking",
    "check",
    "check_revision",
    "subject_for",
]
