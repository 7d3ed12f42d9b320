"""The policy corpus: evasive variants of lexicon terms must be detected (98% or more), and
ordinary financial-marketing sentences must never be blocked by the whole check.

tests/data/policy_corpus/evasive.txt holds "TERM<TAB>text" lines; ordinary.txt one sentence a
line. In both, "# fr" and "# en" lines set the language of what follows, other "#" lines are
comments, and invisible characters may be written as \\uXXXX escapes. The lexicon is the one in
the database (the default lexicon when migrated) plus, for each TERM it lacks, a `block` entry:
the strictest setting for the ordinary sentences. Run with -s to see the rates.
"""

import re
from pathlib import Path

import pytest

from approvals import policy
from approvals.models.policy import LexiconEntry
from approvals.policy.lexicon import LexiconCheck
from approvals.policy.matcher import compile_phrase
from approvals.policy.normalize import normalize

CORPUS = Path(__file__).parent / "data" / "policy_corpus"
MIN_DETECTION = 0.98
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})|\\n")


def _decode(text):
    return _ESCAPE.sub(
        lambda m: chr(int(m.group(1) or m.group(2), 16)) if m[0] != r"\n" else "\n", text
    )


def corpus(name):
    """[(language, line)] of a corpus file, escapes decoded."""
    language, lines = "fr", []
    for raw in (CORPUS / name).read_text(encoding="utf-8").splitlines():
        if raw.strip() in ("# fr", "# en"):
            language = raw.strip()[2:]
        elif raw.strip() and not raw.startswith("#"):
            lines.append((language, _decode(raw)))
    return lines


EVASIVE = [(language, *line.split("\t", 1)) for language, line in corpus("evasive.txt")]
ORDINARY = corpus("ordinary.txt")


@pytest.fixture
def lexicon(db):
    """The database's lexicon, with a `block` entry for each corpus term it lacks."""
    for language, term in sorted({(language, term) for language, term, _ in EVASIVE}):
        LexiconEntry.objects.get_or_create(
            term=term,
            language=language,
            defaults={
                "category": "guarantee",
                "severity": "block",
                "explanation": "Corpus term.",
                "alternative": "",
            },
        )
    return LexiconEntry.objects.filter(enabled=True).count()


def test_the_corpus_is_large_enough_and_bilingual():
    assert len(EVASIVE) >= 100 and {language for language, _, _ in EVASIVE} == {"fr", "en"}
    assert len(ORDINARY) >= 200 and {language for language, _ in ORDINARY} == {"fr", "en"}
    assert all(term.strip() and text.strip() for _, term, text in EVASIVE)
    assert len({text for _, _, text in EVASIVE}) == len(EVASIVE), "duplicate variants"
    assert len({text for _, text in ORDINARY}) == len(ORDINARY), "duplicate sentences"


def keys(phrase):
    return {key for key, *_ in compile_phrase(phrase)}


def detected(term, text, findings):
    """Whether a finding is the term's (or a longer entry's containing it) on its words."""
    wanted = keys(term)
    return any(
        any(k in found for k in wanted for found in keys(f.data["term"]))
        and any(k in normalize(text[f.start : f.end]).text for k in wanted)
        for f in findings
    )


def test_evasive_variants_are_detected(lexicon):
    check = LexiconCheck()
    missed = [
        (term, text)
        for _, term, text in EVASIVE
        if not detected(term, text, list(check.run(policy.Subject(text=text), [])))
    ]
    rate = 1 - len(missed) / len(EVASIVE)
    summary = (
        f"POLICY detection {rate:.1%} of {len(EVASIVE)} evasive variants "
        f"({len(missed)} missed, lexicon of {lexicon} entries)"
    )
    print(f"\n{summary}")
    for term, text in missed:
        print(f"  missed {term!r}: {text!r}")
    assert rate >= MIN_DETECTION, f"{summary}; missed: {missed}"


def test_ordinary_sentences_are_never_blocked(lexicon):
    blocked = []
    for _, text in ORDINARY:
        subject = policy.Subject(text=text, networks=frozenset({"linkedin"}))
        if stops := policy.blocking(policy.check(subject)):
            blocked.append(
                (
                    text,
                    [(f.code, text[f.start : f.end] if f.start is not None else "") for f in stops],
                )
            )
    rate = 1 - len(blocked) / len(ORDINARY)
    summary = (
        f"POLICY ordinary {rate:.1%} of {len(ORDINARY)} sentences with no block finding "
        f"({len(blocked)} blocked, lexicon of {lexicon} entries)"
    )
    print(f"\n{summary}")
    for text, codes in blocked:
        print(f"  blocked {text!r}: {codes}")
    assert not blocked, f"{summary}; blocked: {blocked}"
