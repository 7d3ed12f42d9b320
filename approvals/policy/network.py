"""Network rules: each target network's length, as it counts it, and its hashtag and mention limits.

The rules are the NetworkRule rows (defaults from migration 0007, edited by admins). A network
without a row falls back to its connector's plain character limit, as the preview did.
"""

from types import SimpleNamespace

from approvals import config

from .base import Category, Check, Finding, Severity
from .counting import count, find_hashtags, find_mentions, network_label, overflow_start


def rule_for(network, rules=None):
    """The NetworkRule of a network (from `rules`, by default the configuration's), or a plain
    one from its connector's limit, or None."""
    if rules is None:
        rules = config.current().network_rules
    if network in rules:
        return rules[network]
    from approvals.connectors import get_connector

    try:
        max_length = get_connector(network).max_length
    except LookupError:
        return None
    if max_length is None:
        return None
    return SimpleNamespace(
        network=network,
        max_length=max_length,
        weighted=False,
        url_length=None,
        max_hashtags=None,
        max_mentions=None,
    )


def stored_rules(networks):
    """{network: NetworkRule} for those of these networks that have a row."""
    stored = config.current().network_rules
    return {network: stored[network] for network in networks if network in stored}


def rules_for(networks):
    """{network: rule} for the subject's networks that have one."""
    stored = stored_rules(networks)
    found = {network: rule_for(network, stored) for network in sorted(networks)}
    return {network: rule for network, rule in found.items() if rule is not None}


def network_length(network, text, link):
    """(used, limit) as the network counts them, or None when it has no limit (the preview)."""
    rule = rule_for(network)
    return None if rule is None else (count(text, link, rule), rule.max_length)


def _plural(number, word):
    return f"{number} {word}{'' if number == 1 else 's'}"


class NetworkLengthCheck(Check):
    """Over a target network's length, as that network counts it: blocks submission."""

    def run(self, subject, found):
        for network, rule in rules_for(subject.networks).items():
            used = count(subject.text, subject.link, rule)
            over = used - rule.max_length
            if over <= 0:
                continue
            label = network_label(network)
            how = []
            if rule.weighted:
                how.append("CJK characters and emoji count 2")
            if rule.url_length is not None:
                how.append(f"URLs count {rule.url_length}")
            start = overflow_start(subject.text, subject.link, rule, rule.max_length)
            yield Finding(
                code="network.too_long",
                category=Category.NETWORK,
                severity=Severity.BLOCK,
                message=f"{_plural(over, 'character')} over {label}'s limit of {rule.max_length}"
                + (f" ({'; '.join(how)})" if how else "")
                + ".",
                fix=f"Shorten by {_plural(over, 'character')}.",
                start=start,
                end=None if start is None else len(subject.text),
                network=network,
                data={"used": used, "limit": rule.max_length, "over": over},
            )


class HashtagMentionCheck(Check):
    """More hashtags or mentions than a network allows: a warning on each one over the limit."""

    KINDS = (
        ("hashtag", "max_hashtags", find_hashtags),
        ("mention", "max_mentions", find_mentions),
    )

    def run(self, subject, found):
        rules = rules_for(subject.networks)
        for kind, attribute, find in self.KINDS:
            limited = {n: getattr(r, attribute) for n, r in rules.items()}
            limited = {n: limit for n, limit in limited.items() if limit is not None}
            if not limited:
                continue
            spans = find(subject.text)
            for network, limit in limited.items():
                if len(spans) <= limit:
                    continue
                label = network_label(network)
                for start, end in spans[limit:]:
                    yield Finding(
                        code=f"network.too_many_{kind}s",
                        category=Category.NETWORK,
                        severity=Severity.WARN,
                        message=f"{_plural(len(spans), kind)}: {label} allows {limit}; "
                        f"“{subject.text[start:end]}” is one too many.",
                        fix=f"Keep at most {_plural(limit, kind)} for {label}.",
                        start=start,
                        end=end,
                        network=network,
                        data={"count": len(spans), "limit": limit},
                    )


__all__ = [
    "HashtagMentionCheck",
    "NetworkLengthCheck",
    "network_length",
    "rule_for",
    "rules_for",
    "stored_rules",
]
