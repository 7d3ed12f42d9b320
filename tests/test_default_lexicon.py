"""The default French and English financial-promotion lexicon shipped by migration 0008."""

import importlib
import re
import unicodedata
from collections import Counter

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from approvals.migrations._lexicon_default import ENTRIES
from approvals.models import LexiconEntry
from approvals.models.policy import Category, Language, Severity
from approvals.policy import CHECKS, Subject, check

MIGRATION = importlib.import_module("approvals.migrations.0008_default_lexicon")
BEFORE = ("approvals", "0007_default_network_rules")
LEXICON_CATEGORIES = {
    Category.GUARANTEE,
    Category.RISK_DENIAL,
    Category.SUPERLATIVE,
    Category.TESTIMONIAL,
    Category.TAX_LEGAL,
    Category.CRYPTO,
    Category.URGENCY,
    Category.PERFORMANCE,
}


def shipped():
    """The entries of the default lexicon in the database."""
    keys = {(e["term"], e["language"]) for e in ENTRIES}
    return [e for e in LexiconEntry.objects.all() if (e.term, e.language) in keys]


@pytest.fixture
def default_lexicon(db):
    """The default lexicon, as `migrate` leaves it. A transactional test's flush (any earlier
    test using transactional_db or live_server) empties the table, so put it back: the
    migration's function is idempotent."""
    MIGRATION.create(django_apps, None)
    return shipped()


def words(text):
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return " ".join(re.findall(r"[^\W_]+", text))


@pytest.mark.django_db(transaction=True)
def test_migrate_creates_the_lexicon_and_reversing_removes_it():
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate([BEFORE])
        assert shipped() == []
        executor = MigrationExecutor(connection)
        executor.migrate(leaves)
        entries = shipped()
        assert len(entries) == len(ENTRIES) >= 150
        assert all(e.enabled for e in entries)
    finally:
        MigrationExecutor(connection).migrate(leaves)


def test_size_languages_and_categories(default_lexicon):
    entries = [e for e in default_lexicon if e.enabled]
    counts = Counter((e.language, e.category) for e in entries)
    print("\nDefault lexicon:", len(entries), "enabled entries")
    for language in (Language.FRENCH, Language.ENGLISH):
        line = ", ".join(f"{c} {counts[(language, c)]}" for c in sorted(LEXICON_CATEGORIES))
        print(f"  {language}: {sum(counts[(language, c)] for c in LEXICON_CATEGORIES)} ({line})")
    assert len(entries) >= 150
    for language in (Language.FRENCH, Language.ENGLISH):
        assert sum(1 for e in entries if e.language == language) >= 100
        for category in LEXICON_CATEGORIES:
            assert counts[(language, category)] >= 5, (language, category)
    assert {e.category for e in entries} == LEXICON_CATEGORIES


def test_every_entry_is_explained_with_an_alternative(default_lexicon):
    for entry in default_lexicon:
        assert entry.term == entry.term.strip() and entry.term, entry
        assert entry.category in Category.values, entry
        assert entry.severity in Severity.values, entry
        assert len(entry.explanation) >= 40, entry
        assert entry.explanation.rstrip().endswith((".", "»", ")")), entry
        assert entry.alternative.strip(), entry
        assert "*" not in entry.term.rstrip("*"), entry  # only a trailing * means anything


def test_terms_unique_per_language():
    """Unique as written (the database's constraint) and as matched (case, accents, spacing and
    punctuation do not count), so no two entries of a language compete for the same words."""
    seen = Counter((words(e["term"]).replace(" ", ""), e["language"]) for e in ENTRIES)
    assert [key for key, n in seen.items() if n > 1] == []
    for entry in ENTRIES:
        exceptions = entry["exceptions"].splitlines()
        assert all(line.strip() == line and line for line in exceptions), entry["term"]
        assert len(set(exceptions)) == len(exceptions), entry["term"]
        assert words(entry["term"].rstrip("*")) not in map(words, exceptions), entry["term"]


def test_severities_follow_the_policy(default_lexicon):
    by_key = {(e.term, e.language): e for e in default_lexicon}

    def severity(term, language):
        return by_key[(term, language)].severity

    # Outright promises of return and denials of risk block.
    for term in ("rendement garanti", "sans risque", "zéro risque", "aucun risque"):
        assert severity(term, "fr") == Severity.BLOCK, term
    for term in ("guaranteed return", "risk-free", "can't lose", "no risk"):
        assert severity(term, "en") == Severity.BLOCK, term
    # Legitimate in some contexts: warn, with the explanation of when.
    assert severity("capital garanti", "fr") == Severity.WARN
    assert "fonds en euros" in by_key[("capital garanti", "fr")].explanation
    # Neutral performance wording: info (it calls for the past-performance disclaimer).
    assert severity("performance", "fr") == severity("performance", "en") == Severity.INFO
    for entry in default_lexicon:
        if entry.category in (Category.SUPERLATIVE, Category.URGENCY, Category.CRYPTO):
            assert entry.severity in (Severity.WARN, Severity.INFO), entry
        if entry.category == Category.PERFORMANCE:
            assert entry.severity == Severity.INFO, entry
        if entry.severity == Severity.BLOCK:
            assert entry.category in (
                Category.GUARANTEE,
                Category.RISK_DENIAL,
                Category.TAX_LEGAL,  # guaranteed tax outcomes only
            ), entry


def test_innocent_phrases_are_exceptions(default_lexicon):
    by_key = {(e.term, e.language): e for e in default_lexicon}

    def exceptions(term, language):
        return by_key[(term, language)].exceptions.splitlines()

    for phrase in (
        "garantie décès",
        "garantie obsèques",
        "garanties du contrat",
        "garantie emprunteur",
        "garantie accident de la vie",
        "ne sont pas garanties",
    ):
        assert phrase in exceptions("garanti", "fr")
    for phrase in (
        "Not FDIC insured, not bank guaranteed, may lose value",
        "no guarantee",
        "past performance is no guarantee",
    ):
        assert phrase in exceptions("guarantee", "en")
    assert "les performances passées ne préjugent pas" in exceptions("performance", "fr")
    assert "n'est pas sans risque" in exceptions("sans risque", "fr")
    assert "le risque zéro n'existe pas" in exceptions("risque zéro", "fr")
    # "risque de perte en capital" is the warning we want: "risque" itself is never a term.
    assert not any(words(e.term) in ("risque", "risk", "perte en capital") for e in by_key.values())


def lexicon_findings(text):
    """The lexicon's findings on the text, through the one entry point when it is registered."""
    lexicon = pytest.importorskip("approvals.policy.lexicon")
    if "approvals.policy.lexicon.LexiconCheck" in CHECKS:
        return [f for f in check(Subject(text=text)) if f.code.startswith("lexicon.")]
    return list(lexicon.LexiconCheck().run(Subject(text=text), []))


@pytest.mark.parametrize(
    "text, words_found, category, severity",
    [
        ("Rendement garanti de 8 %", "Rendement garanti", Category.GUARANTEE, Severity.BLOCK),
        ("Un placement sans risque !", "sans risque", Category.RISK_DENIAL, Severity.BLOCK),
        ("Guaranteed returns, every year.", "Guaranteed returns", "guarantee", "block"),
        ("A risk-free way to grow.", "risk-free", Category.RISK_DENIAL, Severity.BLOCK),
        ("Le capital garanti du fonds en euros", "capital garanti", "guarantee", "warn"),
        ("C'est imbattable.", "imbattable", Category.SUPERLATIVE, Severity.WARN),
        ("Dernière chance pour souscrire", "Dernière chance", Category.URGENCY, Severity.WARN),
        ("Act now!", "Act now", Category.URGENCY, Severity.WARN),
        ("Achetez du bitcoin", "bitcoin", Category.CRYPTO, Severity.WARN),
        ("Nos cryptomonnaies", "cryptomonnaies", Category.CRYPTO, Severity.WARN),
        ("Lisez nos avis clients", "avis clients", Category.TESTIMONIAL, Severity.WARN),
        ("Défiscalisation garantie !", "Défiscalisation garantie", "tax_legal", "block"),
        ("Le fonds a rapporté 7 % en 2024.", "a rapporté", "performance", "info"),
    ],
)
def test_default_lexicon_finds(default_lexicon, text, words_found, category, severity):
    findings = lexicon_findings(text)
    assert [(text[f.start : f.end], f.category, f.severity) for f in findings] == [
        (words_found, category, severity)
    ]
    assert findings[0].message and findings[0].fix


@pytest.mark.parametrize(
    "text",
    [
        "Garantie décès incluse",
        "Garantie décès incluse dans votre contrat de prévoyance.",
        "Les garanties du contrat : garantie obsèques, garantie emprunteur et garantie "
        "accident de la vie.",
        "Les rendements des unités de compte ne sont pas garanties.",
        "Not FDIC insured, not bank guaranteed, may lose value",
        "Not FDIC Insured | No Bank Guarantee | May Lose Value",
        "Investir comporte un risque de perte en capital.",
        "Les performances passées ne préjugent pas des performances futures.",
        "Past performance is no guarantee of future results.",
        "Ce placement n'est pas sans risque.",
        "Le risque zéro n'existe pas.",
        "Un placement sur 8 ans, adapté à votre profil.",
        "There is no risk-free investment.",
        "Nos conseillers vous accueillent samedi.",
    ],
)
def test_innocent_text_is_not_flagged(default_lexicon, text):
    assert lexicon_findings(text) == []
    assert not [f for f in check(Subject(text=text)) if f.severity == Severity.BLOCK]
