"""The lexicon check: the compliance admins' terms, found however they are disguised.

One finding per match (see `matcher` and `normalize`), on the subject's text (the link is the
link rules' business): code `lexicon.<category>`, the entry's category and severity, its
explanation prefixed with the words as written, its alternative as the fix, and the span of the
original text.

The compiled matcher is part of the configuration snapshot (approvals.config): rebuilt when a
database trigger says the configuration changed, recompiled only when the lexicon's content did.
"""

from approvals import config

from .base import Check, Finding
from .normalize import normalize


def quote(text):
    return f"“{' '.join(text.split())}”"


class LexiconCheck(Check):
    """The lexicon's terms in the text, with the entry's explanation and alternative."""

    def __init__(self, matcher=None):
        self.matcher = matcher

    def run(self, subject, found):
        if not subject.text:
            return
        matcher = self.matcher or config.current().matcher
        normalized = normalize(subject.text)
        for a, b, entry in matcher.find(normalized):
            start, end = normalized.span(a, b)
            yield Finding(
                code=f"lexicon.{entry.category}",
                category=entry.category,
                severity=entry.severity,
                message=f"{quote(subject.text[start:end])}: {entry.explanation}",
                fix=entry.alternative or "",
                start=start,
                end=end,
                data={
                    "term": entry.term,
                    "language": entry.language,
                    **({"entry": entry.pk} if getattr(entry, "pk", None) else {}),
                },
            )


__all__ = ["LexiconCheck"]
