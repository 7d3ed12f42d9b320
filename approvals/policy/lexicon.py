"""The lexicon check: the compliance admins' terms, found however they are disguised.

One finding per match (see `matcher` and `normalize`), on the subject's text (the link is the
link rules' business): code `lexicon.<category>`, the entry's category and severity, its
explanation prefixed with the words as written, its alternative as the fix, and the span of the
original text.

The compiled matcher is cached per process and rebuilt when the lexicon changes:
- a save or delete of an entry in this process bumps a version (signals): seen at once;
- an aggregate over the table (count, last id, enabled count, summed lengths, severities) is
  asked at every check and catches at once most changes made by other processes, or without
  signals (QuerySet.update(), a rolled-back transaction); its cost grows with the table, so past
  `LARGE_LEXICON` entries it is asked at most once every `KEY_SECONDS`;
- every `RECHECK_SECONDS` the whole content is read and compared (recompiling only if it
  differs), which catches the rest (an edit elsewhere that keeps every length and count).
"""

import hashlib
import threading
import time
from dataclasses import dataclass, replace

from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Length
from django.db.models.signals import post_delete, post_save

from approvals.models.policy import LexiconEntry

from .base import Check, Finding
from .matcher import Matcher
from .normalize import normalize

RECHECK_SECONDS = 60
LARGE_LEXICON = 1000
KEY_SECONDS = 1.0
_FIELDS = (
    "id",
    "term",
    "language",
    "category",
    "severity",
    "explanation",
    "alternative",
    "exceptions",
    "enabled",
)


@dataclass(frozen=True)
class _Cached:
    key: tuple  # _key() when compiled or last confirmed
    digest: bytes  # of the whole content compiled
    checked_at: float  # when the whole content was last read
    asked_at: float  # when the key was last asked
    matcher: Matcher


_lock = threading.Lock()
_version = 0
_cache = None


def _changed(sender, **kwargs):
    global _version
    _version += 1


post_save.connect(_changed, sender=LexiconEntry, dispatch_uid="lexicon_matcher_save")
post_delete.connect(_changed, sender=LexiconEntry, dispatch_uid="lexicon_matcher_delete")


def _key():
    figures = LexiconEntry.objects.aggregate(
        n=Count("id"),
        last=Max("id"),
        enabled=Count("id", filter=Q(enabled=True)),
        block=Count("id", filter=Q(severity="block")),
        warn=Count("id", filter=Q(severity="warn")),
        size=Sum(
            Length("term")
            + Length("language")
            + Length("category")
            + Length("explanation")
            + Length("alternative")
            + Length("exceptions")
        ),
    )
    return (_version, *figures.values())


def _digest(entries):
    digest = hashlib.blake2b(digest_size=16)
    for entry in entries:
        digest.update(repr(tuple(getattr(entry, f) for f in _FIELDS)).encode())
    return digest.digest()


def current_matcher():
    """The matcher of the lexicon as it is now in the database (compiled once per change)."""
    global _cache
    seen, now = _cache, time.monotonic()
    if (
        seen is not None
        and seen.key[0] == _version
        and len(seen.matcher) > LARGE_LEXICON
        and now - seen.asked_at < KEY_SECONDS
        and now - seen.checked_at < RECHECK_SECONDS
    ):
        return seen.matcher
    key = _key()
    if seen is not None and seen.key == key and now - seen.checked_at < RECHECK_SECONDS:
        if now - seen.asked_at > KEY_SECONDS / 2:
            _cache = replace(seen, asked_at=now)
        return seen.matcher
    with _lock:
        current = _cache
        if current is not seen and current.key == key:
            return current.matcher  # another thread rebuilt or rechecked it meanwhile
        entries = list(LexiconEntry.objects.filter(enabled=True).order_by("pk"))
        digest = _digest(entries)
        if seen is not None and seen.digest == digest:
            matcher = seen.matcher  # the same content: keep the compiled automaton
        else:
            matcher = Matcher(entries)
        _cache = _Cached(key, digest, now, now, matcher)
        return matcher


def quote(text):
    return f"“{' '.join(text.split())}”"


class LexiconCheck(Check):
    """The lexicon's terms in the text, with the entry's explanation and alternative."""

    def __init__(self, matcher=None):
        self.matcher = matcher

    def run(self, subject, found):
        if not subject.text:
            return
        matcher = self.matcher or current_matcher()
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


__all__ = ["LexiconCheck", "current_matcher"]
