"""The lexicon matcher: every evasion trick, spans checked against the original text, innocent
contexts, word boundaries, forms, wildcards, overlaps, and the per-process cache."""

from types import SimpleNamespace

import pytest
from django.urls import reverse

from approvals import config, policy
from approvals.models.policy import LexiconEntry, NetworkRule
from approvals.policy.lexicon import LexiconCheck
from approvals.policy.matcher import Matcher, compile_phrase
from approvals.policy.normalize import HARD, NONE, SOFT, fold_char, normalize, stem


def entry(term, language="fr", *, category="guarantee", severity="block", exceptions=()):
    return SimpleNamespace(
        pk=None,
        term=term,
        language=language,
        category=category,
        severity=severity,
        explanation=f"Explanation of {term}.",
        alternative=f"Instead of {term}.",
        exceptions="\n".join(exceptions),
        enabled=True,
    )


def found(entries, text):
    """[(the original text of each match, its entry's term)], in text order."""
    matcher = Matcher(entries if isinstance(entries, list) else [entries])
    return [(text[start:end], e.term) for start, end, e in matcher.spans(text)]


def words(entries, text):
    return [visible for visible, _ in found(entries, text)]


# --- each evasion trick, with the span of the visible word ----------------------------------------

ZW = {
    "zero-width space": "\u200b",
    "zero-width non-joiner": "\u200c",
    "zero-width joiner": "\u200d",
    "word joiner": "\u2060",
    "soft hyphen": "\u00ad",
    "byte order mark": "\ufeff",
    "left-to-right mark": "\u200e",
    "right-to-left mark": "\u200f",
    "right-to-left override": "\u202e",
    "pop directional formatting": "\u202c",
    "first strong isolate": "\u2068",
    "variation selector": "\ufe0f",
    "Hangul filler": "\u3164",
    "tag character": "\U000e0041",
}

EVASIONS = [
    # (trick, term, language, text, the visible evasive word)
    ("case", "garanti", "fr", "Un rendement GARANTI pour tous", "GARANTI"),
    ("mixed case", "guaranteed", "en", "A GuArAnTeEd income", "GuArAnTeEd"),
    ("accents added", "garanti", "fr", "Un capital gàrânti !", "gàrânti"),
    ("accents dropped", "rendement assuré", "fr", "Un rendement assure.", "rendement assure"),
    ("decomposed accent", "garanti", "fr", "Un capital garanti\u0301e !", "garanti\u0301e"),
    (
        "stacked diacritics",
        "garanti",
        "fr",
        "g\u0308\u0301a\u0323ranti",
        "g\u0308\u0301a\u0323ranti",
    ),
    ("fullwidth", "garanti", "fr", "Placement ｇａｒａｎｔｉ !", "ｇａｒａｎｔｉ"),
    ("ligature", "profit garanti", "fr", "Un proﬁt garanti.", "proﬁt garanti"),
    ("mathematical bold", "garanti", "fr", "Rendement 𝐠𝐚𝐫𝐚𝐧𝐭𝐢 !", "𝐠𝐚𝐫𝐚𝐧𝐭𝐢"),
    ("mathematical script", "risk-free", "en", "A 𝓻𝓲𝓼𝓴-𝓯𝓻𝓮𝓮 plan", "𝓻𝓲𝓼𝓴-𝓯𝓻𝓮𝓮"),
    ("circled letters", "garanti", "fr", "Rendement ⓖⓐⓡⓐⓝⓣⓘ.", "ⓖⓐⓡⓐⓝⓣⓘ"),
    ("negative squared letters", "garanti", "fr", "Rendement 🅶🅰🆁🅰🅽🆃🅸.", "🅶🅰🆁🅰🅽🆃🅸"),
    ("Cyrillic a", "garanti", "fr", "Un rendement gаrаnti", "gаrаnti"),
    ("Cyrillic everything", "sans risque", "fr", "Placement ѕаnѕ rіѕquе !", "ѕаnѕ rіѕquе"),
    ("Cyrillic capitals", "garanti", "fr", "Rendement GАRАNТI", "GАRАNТI"),
    ("Cyrillic palochka", "limited offer", "en", "A ӏimited offer", "ӏimited offer"),
    ("Greek letters", "garanti", "fr", "Rendement gαrαnτi.", "gαrαnτi"),
    ("Greek capitals", "bitcoin", "fr", "Achetez du ΒΙΤCΟΙΝ", "ΒΙΤCΟΙΝ"),
    ("Armenian o", "bonus", "en", "A bօnus for you", "bօnus"),
    ("small capitals", "garanti", "fr", "Un rendement ɢᴀʀᴀɴᴛɪ", "ɢᴀʀᴀɴᴛɪ"),
    ("dotless i", "bitcoin", "fr", "Du bıtcoın !", "bıtcoın"),
    ("digits for letters", "garanti", "fr", "Rendement g4r4nt1 !", "g4r4nt1"),
    ("zero for o", "bonus", "en", "A b0nus for you", "b0nus"),
    ("one for l", "capital garanti", "fr", "Un capita1 garanti", "capita1 garanti"),
    ("three and seven", "rentabilité", "fr", "Une r3n7abili73 folle", "r3n7abili73"),
    ("five for s", "sans risque", "fr", "Un placement 5an5 ri5que", "5an5 ri5que"),
    ("symbols for letters", "guaranteed", "en", "Returns gu@r@nteed", "gu@r@nteed"),
    ("dollar for s", "sans risque", "fr", "Un placement $ans risque", "$ans risque"),
    ("euro for e", "garanti", "fr", "Un capital garanti€ !", "garanti€"),
    ("bang for i", "bitcoin", "fr", "Du b!tco!n", "b!tco!n"),
    ("dots between letters", "garanti", "fr", "Rendement g.a.r.a.n.t.i !", "g.a.r.a.n.t.i"),
    ("spaced letters", "garanti", "fr", "Rendement g a r a n t i !", "g a r a n t i"),
    ("dashes between letters", "garanti", "fr", "Rendement g-a-r-a-n-t-i", "g-a-r-a-n-t-i"),
    ("stars between letters", "bitcoin", "fr", "Du b*i*t*c*o*i*n !", "b*i*t*c*o*i*n"),
    ("hyphen inside", "garanti", "fr", "Rendement gar-anti.", "gar-anti"),
    ("underscore inside", "garanti", "fr", "Rendement ga_ranti.", "ga_ranti"),
    ("dot inside", "guaranteed", "en", "Returns gu.aranteed!", "gu.aranteed"),
    ("apostrophe inside", "bitcoin", "en", "Buy bit'coin", "bit'coin"),
    ("words glued", "sans risque", "fr", "Un placement sansrisque", "sansrisque"),
    ("words hyphenated", "sans risque", "fr", "Un placement sans-risque", "sans-risque"),
    ("words far apart", "sans risque", "fr", "Un placement sans   \n risque", "sans   \n risque"),
    ("words split by punctuation", "risk-free", "en", "Totally risk / free", "risk / free"),
    ("plural", "garanti", "fr", "Des rendements garantis", "garantis"),
    ("feminine", "garanti", "fr", "Une performance garantie", "garantie"),
    ("feminine plural", "garanti", "fr", "Des performances garanties", "garanties"),
    ("plural of both words", "rendement garanti", "fr", "Des rendements garantis", None),
    ("al/aux", "capital garanti", "fr", "Des capitaux garantis", None),
    ("doubled consonant", "exceptionnel", "fr", "Des offres exceptionnelles", "exceptionnelles"),
    ("f/ve", "exclusif", "fr", "Une offre exclusive", "exclusive"),
    ("eux/euse", "avantageux", "fr", "Une offre avantageuse", "avantageuse"),
    ("English plural", "guaranteed return", "en", "Guaranteed returns!", "Guaranteed returns"),
    ("English -s", "guarantee", "en", "Our guarantees", "guarantees"),
    ("English -ed", "guarantee", "en", "It is guaranteed", "guaranteed"),
    ("English -ing", "guarantee", "en", "We are guaranteeing it", "guaranteeing"),
    ("English -ies", "unique opportunity", "en", "Unique opportunities", "Unique opportunities"),
    ("emoji around", "garanti", "fr", "🚀🚀 garanti 💰💰", "garanti"),
    ("emoji between words", "sans risque", "fr", "sans 🔥 risque", "sans 🔥 risque"),
    ("emoji glued", "garanti", "fr", "🚀garanti🚀", "garanti"),
    ("flag and skin tone", "garanti", "fr", "🇫🇷👍🏽 garanti 👨‍👩‍👧", "garanti"),
    ("right-to-left text around", "garanti", "fr", "שלום garanti مرحبا", "garanti"),
    ("inside right-to-left isolate", "garanti", "fr", "מבצע \u2067garanti\u2069 היום", "garanti"),
    ("tricks combined", "garanties", "fr", "G.4.R.А.N.Т.\u200bI.E.S", "G.4.R.А.N.Т.\u200bI.E.S"),
    ("tricks combined (en)", "risk-free", "en", "𝐑𝐈𝐒𝐊\u200b-fr33", "𝐑𝐈𝐒𝐊\u200b-fr33"),
] + [
    (f"{name} inside", "garanti", "fr", f"Rendement gar{char}anti.", f"gar{char}anti")
    for name, char in ZW.items()
]


@pytest.mark.parametrize(
    ("term", "language", "text", "visible"),
    [case[1:] for case in EVASIONS],
    ids=[case[0] for case in EVASIONS],
)
def test_each_evasion_is_found_with_the_span_of_the_visible_word(term, language, text, visible):
    [(words_found, term_found)] = found(entry(term, language), text)
    assert term_found == term
    if visible is None:  # the whole text after the first word
        visible = text.split(" ", 1)[1]
    assert words_found == visible


def test_a_right_to_left_text_keeps_spans_in_the_original_order():
    text = "\u202eitnarag\u202c et garanti"  # the override shows "garanti" twice
    assert words(entry("garanti"), text) == ["garanti"]  # the stored letters are what count


def test_spans_count_code_points_before_astral_characters():
    text = "😀😀😀 𝐠𝐚𝐫𝐚𝐧𝐭𝐢 et gar\u200banti"
    spans = Matcher([entry("garanti")]).spans(text)
    assert [(s, e) for s, e, _ in spans] == [(4, 11), (15, 23)]
    assert [text[s:e] for s, e, _ in spans] == ["𝐠𝐚𝐫𝐚𝐧𝐭𝐢", "gar\u200banti"]
    text = "𠀀𠀁𠀂 garanti"  # astral letters are letters of the normalized text too
    assert [(s, e) for s, e, _ in Matcher([entry("garanti")]).spans(text)] == [(4, 11)]


# --- the normalized copy --------------------------------------------------------------------------


def test_origin_maps_each_normalized_character_back():
    text = "Ｌ'ﬁnance ＧＡＲＡＮＴＩＥ\u200b, 3 % en 2026"
    normalized = normalize(text)
    assert len(normalized.origin) == len(normalized.text)
    assert normalized.origin == sorted(normalized.origin)
    for i, char in enumerate(normalized.text):
        source = text[normalized.origin[i]]
        # the normalized character comes from its origin (as folded), or is its skeleton, a
        # leet reading, or the first letter of an expanded one ("ﬁ")
        assert char in fold_char(source).replace("l", "i") or source in "0134578@$€!|"


def test_numbers_stay_numbers_and_digits_in_words_are_letters():
    normalized = normalize("Taux de 3 % en 2026, 100 € par mois, 1er prix, g4gn3z")
    assert "3%" in normalized.text and "2026" in normalized.text and "100€" in normalized.text
    assert "ier" in normalized.text and "gagnez" in normalized.text
    assert normalize("g 4 r 4 n t i").text != "garanti"  # spaced digits are not letters
    assert normalize("g.4.r.4.n.t.i").text == "garanti"  # dotted ones are


def test_gaps_say_what_separates_words():
    normalized = normalize("gar-anti sans g.a.r")
    assert normalized.text == "garantisansgar"
    gaps = normalized.gaps
    assert gaps[0] == HARD and gaps[3] == SOFT and gaps[7] == HARD and gaps[12] == NONE
    assert gaps[len(normalized.text)] == HARD and len(gaps) == len(normalized.text) + 1


def test_stems_collapse_plural_and_feminine_forms_only():
    assert {stem(w) for w in ("garanti", "garantie", "garantis", "garanties")} == {"garanti"}
    assert {stem(w) for w in ("guarantee", "guaranteed", "guarantees")} == {"guarant"}
    assert stem("capitaux") == stem("capital") and stem("exclusive") == stem("exclusif")
    assert stem("sure") != stem("sur") and stem("sans") == "sans" and stem("taux") == "taux"
    assert stem("2026") == "2026"


def test_an_empty_or_punctuation_only_text_or_term():
    assert normalize("").text == "" and normalize("!!! … —").text == ""
    assert Matcher([entry("garanti")]).find("") == []
    assert compile_phrase("  ***  ") == [] and len(Matcher([entry("…")]).find("… garanti")) == 0


# --- word boundaries and forms --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Vous engarantiez la qualité",  # not a word of its own
        "Une garantiequelconque",
        "Le garantisseur",
        "gar anti",  # a space inside a word is a real word boundary
        "ga ranti",
        "Un bitcoinvest",
    ],
)
def test_no_match_inside_another_word(text):
    assert found([entry("garanti"), entry("bitcoin")], text) == []


def test_boundaries_at_punctuation_and_text_edges():
    entries = [entry("garanti")]
    assert words(entries, "garanti") == ["garanti"]
    assert words(entries, "(garanti)") == ["garanti"]
    assert words(entries, "«garanti»,") == ["garanti"]
    assert words(entries, "non-garanti") == ["garanti"]
    assert words(entries, "l'garanti") == ["garanti"]


def test_spaces_inside_a_term_only_where_it_has_them():
    assert words(entry("sans risque"), "sans risque, sans-risque, sansrisque") == [
        "sans risque",
        "sans-risque",
        "sansrisque",
    ]
    assert words(entry("bitcoin"), "bit coin") == []


def test_single_letters_join_only_when_spelt_out():
    assert words(entry("avenir"), "placement d'avenir, à venir") == ["avenir"]
    assert words(entry("ya"), "il y a") == ["y a"]  # spelt letters are one word


def test_trailing_and_leading_wildcards():
    entries = [entry("crypto*", category="crypto"), entry("*coin", category="crypto")]
    text = "crypto, cryptos, cryptomonnaies, crypto-actifs, bitcoin, Bitcoins, coin, encrypt"
    assert words(entries, text) == [
        "crypto",
        "cryptos",
        "cryptomonnaies",
        "crypto",
        "bitcoin",
        "Bitcoins",
        "coin",
    ]


def test_wildcard_with_exception():
    crypto = entry("crypto*", exceptions=["cryptographie", "cryptography"])
    text = "La cryptographie protège vos cryptos; cryptography is not crypto."
    assert words(crypto, text) == ["cryptos", "crypto"]


# --- innocent contexts ----------------------------------------------------------------------------


GARANTI = entry(
    "garanti", severity="warn", exceptions=["garantie décès", "non garanti", "n'est pas garanti"]
)
GUARANTEE = entry(
    "guarantee",
    "en",
    severity="warn",
    exceptions=["Not FDIC insured, not bank guaranteed, may lose value", "not guaranteed"],
)
RISK_DENIAL = entry(
    "sans risque", category="risk_denial", exceptions=["n'est pas sans risque", "pas sans risque"]
)
NO_LOSS = entry("aucune perte", category="risk_denial")
LOSS_OF_CAPITAL = entry(
    "perte en capital", category="risk_denial", exceptions=["risque de perte en capital"]
)


@pytest.mark.parametrize(
    "text",
    [
        "Votre contrat inclut une garantie décès et une assistance.",
        "Les garanties décès sont précisées au contrat.",
        "GARANTIE DÉCÈS incluse",
        "Le capital n'est pas garanti : rendement non garanti.",
        "Not FDIC insured, not bank guaranteed, may lose value.",
        "NOT FDIC INSURED • NOT BANK GUARANTEED • MAY LOSE VALUE",
        "Not FDIC insured - not bank guaranteed - may lose value",
        "Past results are not guaranteed.",
        "Ce placement présente un risque de perte en capital.",
        "Risques de pertes en capital : lisez le DIC.",
        "Un placement n'est pas sans risque.",
    ],
)
def test_innocent_contexts_are_not_flagged(text):
    assert found([GARANTI, GUARANTEE, RISK_DENIAL, NO_LOSS, LOSS_OF_CAPITAL], text) == []


def test_the_same_words_outside_their_innocent_context_are_flagged():
    entries = [GARANTI, GUARANTEE, RISK_DENIAL, LOSS_OF_CAPITAL]
    text = (
        "Garantie décès incluse et rendement garanti. Not FDIC insured. Returns guaranteed. "
        "Aucune perte en capital, sans risque."
    )
    assert found(entries, text) == [
        ("garanti", "garanti"),
        ("guaranteed", "guarantee"),
        ("perte en capital", "perte en capital"),
        ("sans risque", "sans risque"),
    ]


def test_an_exception_of_a_longer_term_clears_the_shorter_ones_inside_it():
    entries = [entry("rendement garanti", exceptions=["aucun rendement garanti"]), GARANTI]
    assert found(entries, "Aucun rendement garanti.") == []
    assert found(entries, "Un rendement garanti.") == [("rendement garanti", "rendement garanti")]


def test_an_exception_applies_to_its_own_entry_only():
    entries = [GARANTI, entry("garantie décès", category="tax_legal", severity="info")]
    assert found(entries, "Une garantie décès") == [("garantie décès", "garantie décès")]


# --- overlaps -------------------------------------------------------------------------------------


def test_the_longest_match_wins_an_overlap():
    entries = [GARANTI, entry("rendement garanti"), entry("garanti à vie", severity="warn")]
    assert found(entries, "Un rendement garanti.") == [("rendement garanti", "rendement garanti")]
    assert found(entries, "Un revenu garanti à vie.") == [("garanti à vie", "garanti à vie")]
    # partial overlap: the longer one is kept, the other dropped
    assert found(entries, "Un rendement garanti à vie!") == [
        ("rendement garanti", "rendement garanti")
    ]


def test_same_words_in_two_entries_give_one_match_the_most_severe():
    entries = [
        entry("bitcoin", "fr", category="crypto", severity="warn"),
        entry("bitcoin", "en", category="crypto", severity="block"),
    ]
    [(start, end, chosen)] = Matcher(entries).spans("Buy bitcoin")
    assert chosen.language == "en" and chosen.severity == "block"


def test_disabled_entries_are_not_matched():
    off = entry("garanti")
    off.enabled = False
    assert found([off], "garanti") == []


def test_repeated_terms_each_found():
    text = "garanti, GARANTI et g.a.r.a.n.t.i"
    assert words(GARANTI, text) == ["garanti", "GARANTI", "g.a.r.a.n.t.i"]


# --- the check, on the database, and its cache ----------------------------------------------------


def make_entry(term, **fields):
    defaults = {
        "language": "fr",
        "category": "guarantee",
        "severity": "block",
        "explanation": "Promettre un gain est trompeur.",
        "alternative": "Parlez d'objectif, non garanti.",
    }
    return LexiconEntry.objects.create(term=term, **(defaults | fields))


@pytest.fixture
def own_lexicon(db):
    """Only the entries a test creates (the default lexicon, if migrated, is set aside)."""
    LexiconEntry.objects.all().delete()


def current_matcher():
    return config.current().matcher


def lexicon_findings(text):
    return [f for f in policy.check(policy.Subject(text=text)) if f.code.startswith("lexicon.")]


def test_the_check_is_registered_first():
    assert policy.CHECKS[0] == "approvals.policy.lexicon.LexiconCheck"


def test_the_check_reports_each_match_with_entry_and_span(own_lexicon):
    entry_ = make_entry("rendement garanti", exceptions="aucun rendement garanti")
    text = "🚀 Un R3NDEMENT g.a.r.a.n.t.i, aucun rendement garanti ailleurs."
    [finding] = lexicon_findings(text)
    assert finding.code == "lexicon.guarantee" and finding.category == "guarantee"
    assert finding.severity == "block" and finding.fix == "Parlez d'objectif, non garanti."
    assert text[finding.start : finding.end] == "R3NDEMENT g.a.r.a.n.t.i"
    assert finding.message == "“R3NDEMENT g.a.r.a.n.t.i”: Promettre un gain est trompeur."
    assert finding.data == {"term": "rendement garanti", "language": "fr", "entry": entry_.pk}
    assert policy.blocking([finding]) == [finding]


def test_the_check_looks_at_the_text_not_the_link(own_lexicon):
    make_entry("garanti")
    subject = policy.Subject(text="Rien à signaler.", link="https://example.com/garanti")
    assert list(LexiconCheck().run(subject, [])) == []
    assert list(LexiconCheck().run(policy.Subject(text=""), [])) == []


def test_the_cache_is_reused_and_rebuilt_after_an_admin_edits_an_entry(client, world):
    LexiconEntry.objects.all().delete()
    item = make_entry("garanti", severity="warn")
    first = current_matcher()
    assert current_matcher() is first  # compiled once
    assert [f.severity for f in lexicon_findings("Capital garanti")] == ["warn"]

    client.force_login(world.carla)
    response = client.post(
        reverse("admin:approvals_lexiconentry_change", args=[item.pk]),
        {
            "term": "assuré",
            "language": "fr",
            "category": "guarantee",
            "severity": "block",
            "explanation": "Promettre est trompeur.",
            "alternative": "",
            "exceptions": "",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    assert current_matcher() is not first
    assert lexicon_findings("Capital garanti") == []
    [finding] = lexicon_findings("Capital assuré")
    assert finding.severity == "block" and finding.message.startswith("“assuré”")


def test_the_cache_sees_changes_made_without_signals(own_lexicon):
    item = make_entry("garanti")
    first = current_matcher()
    LexiconEntry.objects.filter(pk=item.pk).update(term="assuré")  # no signal
    second = current_matcher()
    assert second is not first and [e.term for e in second.entries] == ["assuré"]
    LexiconEntry.objects.filter(pk=item.pk).update(term="certai")  # no signal, same length
    third = current_matcher()
    assert third is not second and [e.term for e in third.entries] == ["certai"]
    NetworkRule.objects.create(network="elsewhere", max_length=200)  # another part changed
    assert current_matcher() is third  # the same lexicon: the same automaton


def test_disabling_or_deleting_an_entry_takes_effect(own_lexicon):
    item = make_entry("garanti")
    assert len(lexicon_findings("garanti")) == 1
    item.enabled = False
    item.save()
    assert lexicon_findings("garanti") == []
    item.delete()
    assert len(current_matcher()) == 0


def test_the_default_lexicon_when_present(db):
    if not LexiconEntry.objects.exists():
        pytest.skip("no default lexicon in this database")
    findings = lexicon_findings("Rendement G.A.R.A.N.T.I et ѕаnѕ rіѕquе !")
    flagged = {(f.code, f.severity) for f in findings}
    assert ("lexicon.guarantee", "block") in flagged
    assert ("lexicon.risk_denial", "block") in flagged
    innocent = (
        "Votre contrat prévoit une garantie décès. Not FDIC insured, not bank guaranteed, may "
        "lose value. Ce placement présente un risque de perte en capital."
    )
    assert policy.blocking(lexicon_findings(innocent)) == []


def test_repeated_letters_hashtags_and_camel_case():
    entries = [entry("rendement garanti"), entry("sans risque")]
    text = "#RendementGaranti, un rendement garantiiiii et SANS RIIIISQUE"
    assert words(entries, text) == ["RendementGaranti", "rendement garantiiiii", "SANS RIIIISQUE"]
    assert normalize("www.banque.fr").text == "wbanqufr"  # harmless for a lexicon
