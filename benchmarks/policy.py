"""The lexicon check on a 3,000-character post against a 5,000-entry lexicon.

Run by `make bench` (after the queue benchmark) or alone: `python -m benchmarks.policy`.
The lexicon is generated in memory (French and English terms of two to four words, with
exceptions on a tenth of them), so the matcher needs no database. The post mixes ordinary
French and English marketing text with a few terms of the lexicon, some of them disguised.

Figures, one line each on stdout (progress goes to stderr):
  BENCH policy_build_ms       compiling the 5,000 entries into one automaton (once per change)
  BENCH policy_patterns       automaton patterns (terms and exceptions, and their glued forms)
  BENCH policy_findings       findings on the post
  BENCH policy_check_ms       median time of the lexicon check on the post: normalize, automaton,
                              boundaries, forms and exceptions, spans mapped back, findings
  BENCH policy_naive_ms       median time of the naive way: one compiled case-insensitive
                              regular expression per term (words apart by any non-letters,
                              the same plural endings), run over the post normalized character
                              by character (case, accents, compatibility forms, invisible
                              characters, look-alike letters), spaces kept
  BENCH policy_vs_naive       speed-up of the check over the naive way, measured in the same run
  BENCH policy_full_check_ms  median time of approvals.policy.check (every check, the lexicon of
                              the database with the 5,000 entries added in a transaction that is
                              rolled back), when a migrated database is at hand

Knobs (environment): BENCH_POLICY_RUNS (300), BENCH_POLICY_NAIVE_RUNS (30).
Targets (issue 4): policy_check_ms under 2 ms, policy_vs_naive 20 or more.
"""

import os
import random
import re
import statistics
import sys
import time
from types import SimpleNamespace

RUNS = int(os.environ.get("BENCH_POLICY_RUNS", "300"))
NAIVE_RUNS = int(os.environ.get("BENCH_POLICY_NAIVE_RUNS", "30"))
ENTRIES = 5000
POST_LENGTH = 3000
SEED = 20240604

FR_HEADS = (
    "rendement placement capital gain revenu profit bénéfice plus-value performance épargne "
    "investissement portefeuille fonds produit offre taux intérêt dividende rente prime "
    "allocation stratégie solution opportunité formule contrat bonus avantage crédit"
).split()
FR_MODIFIERS = (
    "garanti assuré certain sûr exceptionnel imbattable unique exclusif illimité immédiat "
    "record historique inédit miraculeux phénoménal automatique sécurisé infaillible "
    "extraordinaire maximal optimal parfait idéal incroyable spectaculaire fulgurant"
).split()
FR_TAILS = (
    "à vie|sans effort|dès aujourd'hui|en quelques jours|pour tous|chaque mois|sans condition|"
    "à coup sûr|en un clic|sans frais|pour toujours|dès demain"
).split("|")
EN_HEADS = (
    "return yield income profit gain payout dividend growth earnings interest rate bonus "
    "portfolio fund strategy opportunity investment product plan deal offer package account"
).split()
EN_MODIFIERS = (
    "guaranteed certain assured unbeatable exceptional unique exclusive unlimited instant "
    "record historic unprecedented miraculous phenomenal automatic secure foolproof "
    "extraordinary maximum optimal perfect ideal incredible spectacular explosive"
).split()
EN_TAILS = (
    "for life|without effort|starting today|in days|for everyone|every month|no strings|"
    "for sure|in one click|with no fees|forever|by tomorrow"
).split("|")

POST_FR = (
    "Nos conseillers vous accueillent samedi dans notre nouvelle agence de Lyon pour parler de "
    "votre épargne retraite, de votre assurance vie et de vos projets immobiliers. Simulation de "
    "prêt immobilier sur rendez-vous ; le capital investi n'est pas garanti et comporte un risque "
    "de perte en capital. Les performances passées ne préjugent pas des performances futures. "
)
POST_EN = (
    "Join our webinar on retirement planning next Thursday at 6 pm: our advisors explain how "
    "diversification works and answer your questions about fees and taxes. Investing involves "
    "risk, including possible loss of principal. Not FDIC insured, not bank guaranteed, may "
    "lose value. "
)


def log(message):
    print(message, file=sys.stderr, flush=True)


def bench(name, value, unit):
    print(f"BENCH {name} {value} {unit}", flush=True)


def make_lexicon(count=ENTRIES, seed=SEED):
    """`count` distinct French and English entries of two to four words, as plain objects."""
    rng = random.Random(seed)
    entries, seen = [], set()
    categories = ["guarantee", "risk_denial", "superlative", "performance", "urgency"]
    severities = ["block", "warn", "warn", "info"]
    while len(entries) < count:
        language = "fr" if len(entries) % 2 == 0 else "en"
        heads, modifiers, tails = (
            (FR_HEADS, FR_MODIFIERS, FR_TAILS)
            if language == "fr"
            else (EN_HEADS, EN_MODIFIERS, EN_TAILS)
        )
        head, modifier = rng.choice(heads), rng.choice(modifiers)
        shape = rng.random()
        if shape < 0.5:
            words = [head, modifier] if language == "fr" else [modifier, head]
        else:
            words = [head, modifier, rng.choice(tails)]
            if language == "en":
                words[:2] = [modifier, head]
        term = " ".join(words)
        if (term, language) in seen:
            continue
        seen.add((term, language))
        exceptions = ""
        if rng.random() < 0.1:
            exceptions = (
                f"non {term}\npas de {term}" if language == "fr" else f"not {term}\nno {term}"
            )
        entries.append(
            SimpleNamespace(
                pk=len(entries) + 1,
                term=term,
                language=language,
                category=rng.choice(categories),
                severity=rng.choice(severities),
                explanation="Generated entry.",
                alternative="Say it plainly.",
                exceptions=exceptions,
                enabled=True,
            )
        )
    return entries


def make_post(entries, length=POST_LENGTH, seed=SEED):
    """About `length` characters of ordinary text with a few of the terms, some disguised."""
    rng = random.Random(seed)
    planted = [e.term for e in rng.sample(entries, 6)]
    disguised = [
        planted[0].upper(),
        planted[1].replace("a", "а"),  # Cyrillic a
        "\u200b".join(planted[2]),  # zero-width spaces between the letters
        planted[3],
        planted[4].replace("e", "3"),
        planted[5],
    ]
    parts, size, n = [], 0, 0
    while size < length:
        chunk = POST_FR if n % 2 == 0 else POST_EN
        if n < len(disguised):
            chunk = f"{chunk}{disguised[n]} ! "
        parts.append(chunk)
        size += len(chunk)
        n += 1
    return "".join(parts)[:length]


def timed(function, runs, warmup=5):
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def naive_patterns(entries):
    """One compiled case-insensitive regular expression per term (with the same plural and
    feminine endings on the last word), words separated by any non-letters."""
    patterns = []
    for entry in entries:
        words = [re.escape(w) for w in re.findall(r"[^\W_]+", entry.term.casefold())]
        patterns.append(
            re.compile(r"\b" + r"\W+".join(words) + r"(?:s|e|es|x|d|ed|ing)?\b", re.IGNORECASE)
        )
    return patterns


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()

    from approvals.policy.base import Subject
    from approvals.policy.lexicon import LexiconCheck
    from approvals.policy.matcher import Matcher
    from approvals.policy.normalize import fold_char

    entries = make_lexicon()
    post = make_post(entries)
    started = time.perf_counter()
    matcher = Matcher(entries)
    bench("policy_build_ms", f"{(time.perf_counter() - started) * 1000:.0f}", "ms")
    bench("policy_patterns", matcher.patterns, "patterns")
    check = LexiconCheck(matcher)
    subject = Subject(text=post)
    findings = list(check.run(subject, []))
    log(f"policy: {len(post)} characters, {len(entries)} entries, {len(findings)} findings:")
    for finding in findings:
        log(f"  {finding.severity:5} {finding.code:24} {post[finding.start : finding.end]!r}")
    bench("policy_findings", len(findings), "findings")

    fast = timed(lambda: list(check.run(subject, [])), RUNS)
    bench("policy_check_ms", f"{fast:.3f}", "ms")

    # The naive way, on the same normalized text (case, accents, compatibility forms and
    # invisible characters folded, character by character, spaces kept).
    readable = "".join(map(fold_char, post))
    patterns = naive_patterns(entries)
    naive_hits = sum(1 for p in patterns if p.search(readable))
    log(f"policy: naive way finds {naive_hits} terms (it misses disguised ones)")
    naive = timed(lambda: [m.span() for p in patterns for m in p.finditer(readable)], NAIVE_RUNS, 1)
    bench("policy_naive_ms", f"{naive:.1f}", "ms")
    bench("policy_vs_naive", f"{naive / fast:.0f}", "x")

    full_check(entries, post)


def full_check(entries, post):
    """approvals.policy.check with the entries in the database (rolled back), if one is ready."""
    from django.db import DatabaseError, transaction

    from approvals import policy
    from approvals.models.policy import LexiconEntry

    fields = ["term", "language", "category", "severity", "explanation", "alternative"]
    try:
        with transaction.atomic():
            existing = set(LexiconEntry.objects.values_list("term", "language"))
            LexiconEntry.objects.bulk_create(
                [
                    LexiconEntry(exceptions=e.exceptions, **{f: getattr(e, f) for f in fields})
                    for e in entries
                    if (e.term, e.language) not in existing
                ],
                batch_size=1000,
            )
            subject = policy.Subject(text=post, networks=frozenset({"linkedin"}))
            started = time.perf_counter()
            findings = policy.check(subject)  # the first call compiles the lexicon
            log(
                f"policy: full check compiled {LexiconEntry.objects.count()} entries in "
                f"{(time.perf_counter() - started) * 1000:.0f} ms, {len(findings)} findings"
            )
            full = timed(lambda: policy.check(subject), max(RUNS // 3, 50))
            bench("policy_full_check_ms", f"{full:.3f}", "ms")
            transaction.set_rollback(True)
    except DatabaseError as error:
        log(f"policy: full check skipped, no migrated database ({error})")


if __name__ == "__main__":
    main()
