"""Every lexicon term in one Aho-Corasick automaton, matched on the normalized word stream.

`Matcher(entries)` takes any objects with `term`, `language` and `exceptions` (and, when they
have them, `enabled` and `severity`): LexiconEntry rows or plain objects. Each term and each
exception phrase is normalized as the text is (see `normalize`: case, accents, compatibility
forms, invisible characters, look-alike letters, digits for letters, plural and feminine forms),
so one automaton over the word stream finds every term whatever its disguise, with one pattern
per phrase (two for a phrase of several words). What the automaton cannot know is checked on
each hit:

- word boundaries: a hit must start and end where the text has a word boundary (a SOFT or HARD
  gap), so "garantie" is not found in "engarantiez"; inside a hit, a space (HARD gap) is
  accepted only where the term has a word boundary of its own: "sans risque" matches
  "sans  risque", "sans-risque" and "sansrisque" (the second, glued pattern), and "garanti"
  matches "gar-anti" and "g a r a n t i" (spelt letter by letter) but not "gar anti";
- a trailing "*" accepts any word ending ("crypto*": "cryptos", "cryptomonnaie"), a leading "*"
  any word beginning ("*coin": "bitcoin");
- overlaps: the longest hit wins (then the most severe, then the first); a hit overlapping one
  already kept is dropped; two entries on the same words give one hit (the most severe);
- exceptions: a hit inside an occurrence of one of its own entry's exception phrases is dropped
  ("garantie décès", "not bank guaranteed"), and so are the shorter hits inside it ("garanti"
  in "aucun rendement garanti", when that is an exception of "rendement garanti").

`find(normalized)` returns (start, end, entry) in normalized positions, in text order;
`normalized.span(start, end)` is the span of the original text.
"""

import re

import ahocorasick

from .normalize import HARD, SOFT, Normalized, normalize

TERM, EXCEPTION = 0, 1
SEVERITY_RANK = {"block": 0, "warn": 1, "info": 2}


_PIECES = re.compile(r"[^\W_]+|[@$€%]")


def compile_phrase(phrase):
    """The automaton patterns of a term or exception phrase: [(key, breaks, star_start,
    star_end)], `breaks` being the offsets in `key` where the phrase has a word boundary;
    empty when nothing of it is left to match (only punctuation, say).

    A phrase of several words has a second pattern, its words glued ("doublezvotreargent",
    "riskfree"): glued words are one word of the text, stemmed as one, which may differ from
    the phrase's words stemmed one by one ("votre" -> "votr", "free" -> "free")."""
    phrase = (phrase or "").strip()
    star_start, star_end = phrase.startswith("*"), phrase.endswith("*")
    core = phrase.strip("*").strip()
    normalized = normalize(core)
    key, gaps = normalized.text, normalized.gaps
    if not key:
        return []
    breaks = frozenset(k for k in range(1, len(key)) if gaps[k])
    patterns = [(key, breaks, star_start, star_end)]
    if breaks:
        glued = normalize("".join(_PIECES.findall(core))).text
        if glued and glued != key:
            patterns.append((glued, frozenset(), star_start, star_end))
    return patterns


class Matcher:
    """All enabled entries' terms and exceptions, compiled once (see the module)."""

    def __init__(self, entries):
        self.entries = [e for e in entries if getattr(e, "enabled", True)]
        self._ranks = [SEVERITY_RANK.get(getattr(e, "severity", ""), 9) for e in self.entries]
        table = {}
        for index, entry in enumerate(self.entries):
            phrases = [(TERM, entry.term)] + [
                (EXCEPTION, line)
                for line in (getattr(entry, "exceptions", "") or "").splitlines()
                if line.strip()
            ]
            for kind, phrase in phrases:
                for key, breaks, star_start, star_end in compile_phrase(phrase):
                    table.setdefault(key, []).append((kind, index, breaks, star_start, star_end))
        self.patterns = len(table)
        self._automaton = ahocorasick.Automaton()
        for key, records in table.items():
            self._automaton.add_word(key, (len(key), tuple(records)))
        if table:
            self._automaton.make_automaton()

    def __len__(self):
        return len(self.entries)

    def find(self, normalized):
        """[(start, end, entry)] in `normalized` (a Normalized, or a str to normalize)."""
        if not isinstance(normalized, Normalized):
            normalized = normalize(normalized)
        text, gaps = normalized.text, normalized.gaps
        if not self.patterns or not text:
            return []
        hits = {}  # (start, end, index) of terms
        exceptions = {}  # index -> [(start, end)]
        for last, (length, records) in self._automaton.iter(text):
            a0, b0 = last - length + 1, last + 1
            inner = []  # offsets of the spaces inside the hit
            h = gaps.find(HARD, a0 + 1, b0)
            while h != -1:
                inner.append(h - a0)
                h = gaps.find(HARD, h + 1, b0)
            for kind, index, breaks, star_start, star_end in records:
                if inner and not breaks.issuperset(inner):
                    continue
                a = a0
                if not gaps[a]:
                    if not star_start:
                        continue
                    a = max(gaps.rfind(SOFT, 0, a), gaps.rfind(HARD, 0, a))
                b = b0
                if not gaps[b]:
                    if not star_end:
                        continue
                    b = _next_boundary(gaps, b)
                if kind == TERM:
                    hits[(a, b, index)] = None
                else:
                    exceptions.setdefault(index, []).append((a, b))
        if not hits:
            return []
        ranks = self._ranks
        kept, innocent = [], []
        for a, b, index in sorted(hits, key=lambda h: (h[0] - h[1], ranks[h[2]], h[0], h[2])):
            if any(x <= a and b <= y for x, y in innocent):
                continue  # inside a longer hit that an exception clears
            if any(x <= a and b <= y for x, y in exceptions.get(index, ())):
                innocent.append((a, b))
            elif all(b <= x or y <= a for x, y, _ in kept):
                kept.append((a, b, index))
        kept.sort()
        return [(a, b, self.entries[index]) for a, b, index in kept]

    def spans(self, text):
        """[(start, end, entry)] in the original `text`: a shortcut for tests and tools."""
        normalized = normalize(text)
        return [(*normalized.span(a, b), entry) for a, b, entry in self.find(normalized)]


def _next_boundary(gaps, position):
    soft = gaps.find(SOFT, position)
    hard = gaps.find(HARD, position)  # always found: the end is HARD
    return hard if soft == -1 else min(soft, hard)


__all__ = ["Matcher", "compile_phrase"]
