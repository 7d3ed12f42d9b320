"""Reviews and endorsements: star ratings, scores, review counts and platforms, quoted client
praise and attributed client statements.

The French regulator treats reviews published on a firm's own initiative as unfair
(ACPR Recommendation 2016-R-01 on social media), and the SEC Marketing Rule (206(4)-1) requires
disclosures for testimonials, endorsements and third-party ratings. Each finding is a warning of
category testimonial, code testimonial.<kind>, on the exact span of the original text.

A few regular expressions, compiled once, are enough here: the patterns are shapes (numbers,
stars, quotation marks, attributions), not a vocabulary; the vocabulary ("avis client",
"témoignage"...) is the lexicon's.
"""

import re
import unicodedata

from django.conf import settings

from .base import Category, Check, Finding, Severity

# --- Patterns -----------------------------------------------------------------------------------

_STAR = "★☆✩✪✫✬✭✮✯✰⭐🌟⭑⭒"
_SPACE = r"[ \t\u00a0\u202f]"
_SCORE = r"[0-5](?:[.,]\d{1,2})?"
_OUT_OF_5 = rf"(?:{_SPACE}?/{_SPACE}?5(?![\d/]|[.,]\d)|{_SPACE}+(?:sur|out{_SPACE}+of){_SPACE}+5\b)"
# What follows a score: "/5", "sur 5", "out of 5", a star, "stars", "étoiles".
_SCALE = (
    rf"(?:{_OUT_OF_5}|{_SPACE}?[{_STAR}]\ufe0f?"
    rf"|(?:{_SPACE}|-)*(?:stars?|[ée]toiles?)\b)"
)
_COUNT = r"\d{1,3}(?:[ \u00a0\u202f.,]\d{3})+|\d+"
_REVIEWERS = (
    r"(?:clients?|clientes?|customers?|investors?|users?|reviews?|ratings?|utilisateurs?|"
    r"investisseu(?:rs?|ses?)|épargnant(?:e|s|es)?|avis|votes?|notes?)"
)
# "... by 1,200 clients", "... sur 1 200 avis", "... (based on 300 reviews)".
_BY = (
    rf"(?:{_SPACE}+(?:by|from|par|de|sur|based{_SPACE}+on|basée?{_SPACE}+sur)"
    rf"(?:{_SPACE}+(?:plus{_SPACE}+de|more{_SPACE}+than|over))?"
    rf"{_SPACE}+(?:{_COUNT}){_SPACE}*{_REVIEWERS}\b)?"
)

# Needles: a pattern only runs when the case-folded text holds one of them (a cheap test that
# spares the text most of the regular expressions).
_SITES = (
    "trustpilot google rifi feefo ekomi yelp opinion immodvisor trustindex bazaarvoice reviews.io"
).split()
_PATTERNS = [
    # ★★★★★, ⭐⭐⭐⭐, ★★★★☆ (three glyphs or more; one or two are decoration).
    ("stars", tuple(_STAR), re.compile(rf"(?:[{_STAR}]\ufe0f?{_SPACE}?){{2,}}[{_STAR}]\ufe0f?")),
    # 4,8 ★ / 4.9⭐ / 5/5 ★
    (
        "stars",
        tuple(_STAR),
        re.compile(
            rf"(?<![\w.,/]){_SCORE}(?:{_SPACE}?/{_SPACE}?5)?{_SPACE}?[{_STAR}]\ufe0f?{_BY}",
        ),
    ),
    # 5 étoiles, cinq étoiles, five stars, 5-star, 4.5 stars
    (
        "stars",
        ("star", "toile"),
        re.compile(
            r"(?<![\w.,])(?:[3-5](?:[.,]\d)?|trois|quatre|cinq|three|four|five)"
            rf"(?:{_SPACE}|-)*(?:[ée]toiles?|stars?)\b{_BY}",
            re.IGNORECASE,
        ),
    ),
    # 5/5, 4.8/5, 4,9 sur 5, 4.7 out of 5, 9,5/10, 10/10
    (
        "rating",
        ("/", "sur", "out"),
        re.compile(
            rf"(?<![\w.,/])(?:{_SCORE}{_OUT_OF_5}|(?:10|\d[.,]\d){_SPACE}?/{_SPACE}?10(?![\d/]))"
            rf"{_BY}",
            re.IGNORECASE,
        ),
    ),
    # Note moyenne 4,9 ; note globale de 4,8/5 ; noté 4,7 par 300 clients ; notée 5 sur 5
    (
        "rating",
        ("note", "noté"),
        re.compile(
            rf"\bnote{_SPACE}+(?:moyenne|globale|client(?:e|s|es)?|de{_SPACE}+satisfaction)\b"
            rf"(?:{_SPACE}*(?:de|:)?{_SPACE}*{_SCORE}(?:{_SCALE})?)?{_BY}"
            rf"|\bnoté(?:e|s|es)?{_SPACE}+(?:de{_SPACE}+)?{_SCORE}(?:{_SCALE})?{_BY}",
            re.IGNORECASE,
        ),
    ),
    # rated 4.9 by 1,200 clients ; rating of 4.8 ; average rating ; 4.9 average rating
    (
        "rating",
        ("rated", "rating"),
        re.compile(
            rf"\brated{_SPACE}+(?:at{_SPACE}+)?{_SCORE}(?:{_SCALE})?{_BY}"
            rf"|(?:\b{_SCORE}{_SPACE}+)?\b(?:average|overall|customer|client){_SPACE}+rating\b"
            rf"(?:{_SPACE}+(?:of{_SPACE}+)?{_SCORE}(?:{_SCALE})?)?{_BY}"
            rf"|\brating{_SPACE}+of{_SPACE}+{_SCORE}(?:{_SCALE})?{_BY}",
            re.IGNORECASE,
        ),
    ),
    # 1 200 avis, plus de 500 avis clients, based on 1,200 reviews, 300 témoignages
    (
        "review_count",
        ("avis", "review", "valuation", "rating", "moignage", "testimonial"),
        re.compile(
            rf"(?<![\w.,])(?:{_COUNT}){_SPACE}*(?:avis(?:{_SPACE}+client(?:e|s|es)?)?"
            r"(?![ \u00a0]*d['’](?:imposition|échéance|opéré))|reviews?|évaluations?|ratings?|"
            r"témoignages?|testimonials?)\b",
            re.IGNORECASE,
        ),
    ),
    # Review platforms.
    (
        "review_site",
        _SITES,
        re.compile(
            rf"\b(?:Trustpilot|Google{_SPACE}+(?:reviews?|avis)|avis{_SPACE}+Google|"
            rf"Avis{_SPACE}+V[ée]rifi[ée]s|Verified{_SPACE}+Reviews|Feefo|eKomi|Yelp|"
            rf"Opinion{_SPACE}+System|Immodvisor|Trustindex|Bazaarvoice|Reviews\.io)\b",
            re.IGNORECASE,
        ),
    ),
]

# An attribution to a client: "— Marie, cliente depuis 2015", "- John D.", "says our client".
_NAME = r"[A-ZÀ-Ý][\w'’-]+"
_ROLE = (
    r"(?:client|cliente|clients|clientes|customer|customers|investor|investors|investisseur|"
    r"investisseuse|épargnant|épargnante|sociétaire|member|membre|abonné|abonnée)\b"
)
_DASH_ATTRIBUTION = (
    rf"(?<![\w-])[—–―-]{{1,2}}{_SPACE}*{_NAME}(?:{_SPACE}+{_NAME})?(?:{_SPACE}+[A-ZÀ-Ý]\.)?"
    rf"(?:,{_SPACE}*(?:(?:notre|our|une?|a|an|fidèle|loyal){_SPACE}+)?{_ROLE}"
    rf"(?:{_SPACE}+(?:depuis|since){_SPACE}+(?:\d{{4}}|\d+{_SPACE}+(?:ans|years)))?"
    rf"(?:{_SPACE}+(?:à|in|de|from){_SPACE}+{_NAME})?)?"
)
_SAYS = (
    rf"\b(?i:says|said|explains|writes|according{_SPACE}+to){_SPACE}+(?:our{_SPACE}+|one{_SPACE}+of"
    rf"{_SPACE}+our{_SPACE}+|a{_SPACE}+)?{_ROLE}(?:{_SPACE}+{_NAME}(?:{_SPACE}+[A-Z]\.)?)?"
    rf"|\b(?i:dit|déclare|explique|raconte|témoigne|confie|écrit|selon)"
    rf"{_SPACE}+(?:notre|nos|une?|l['’]une?{_SPACE}+de{_SPACE}+nos){_SPACE}+{_ROLE}"
    rf"(?:{_SPACE}+{_NAME}(?:{_SPACE}+[A-ZÀ-Ý]\.)?)?"
)
_ATTRIBUTION_AFTER = re.compile(
    rf"{_SPACE}*[,.]?{_SPACE}*\n?{_SPACE}*(?:{_DASH_ATTRIBUTION}|{_SAYS})"
)
_ROLE_BEFORE = re.compile(rf"{_ROLE}[^.!?\n«“\"]{{0,40}}:{_SPACE}*\Z", re.IGNORECASE)

# Standalone attributions, without quotation marks: the dash form needs a role or an initial.
_DASHES = ("-", "—", "–", "―")
_VERBS = (
    "says said explains writes according dit déclare explique raconte témoigne confie écrit selon"
).split()
_ATTRIBUTIONS = [
    (
        _DASHES,
        re.compile(
            rf"(?<![\w-])[—–―-]{{1,2}}{_SPACE}*{_NAME}(?:{_SPACE}+{_NAME})?"
            rf",{_SPACE}*(?:(?:notre|our|une?|a|an|fidèle|loyal){_SPACE}+)?{_ROLE}"
            rf"(?:{_SPACE}+(?:depuis|since){_SPACE}+(?:\d{{4}}|\d+{_SPACE}+(?:ans|years)))?"
            rf"(?:{_SPACE}+(?:à|in|de|from){_SPACE}+{_NAME})?"
        ),
    ),
    (_DASHES, re.compile(rf"(?<![\w-])[—–―-]{{1,2}}{_SPACE}*{_NAME}{_SPACE}+[A-ZÀ-Ý]\.(?!\w)")),
    (_VERBS, re.compile(_SAYS)),
]

_QUOTES = [
    re.compile(r"«(?P<body>[^«»]{1,500})»"),
    re.compile(r"“(?P<body>[^“”]{1,500})”"),
    re.compile(r"„(?P<body>[^„“”]{1,500})[“”]"),
    re.compile(r'"(?P<body>[^"\n]{1,500})"'),
]

# Praise, compared without accents or case.
_PRAISE = re.compile(
    r"\b(?:excellent(?:e|s|es)?|parfait(?:e|s|es)?|parfaitement|recommand\w*|je\s+conseille|"
    r"top|au\s+top|genial(?:e|s|es)?|geniaux|super|merci|ravie?s?|satisfaite?s?|formidable|"
    r"incroyable|bravo|extraordinaire|exceptionnel(?:le)?s?|fantastique|impeccable|"
    r"professionnel(?:le)?s?|a\s+l'ecoute|de\s+confiance|grace\s+a|meilleure?s?|efficace|"
    r"reactif|reactive|recommend\w*|perfect(?:ly)?|best|amazing|great|awesome|fantastic|"
    r"outstanding|thanks?|thank\s+you|love[ds]?|happy|pleased|delighted|trust(?:ed|worthy)?|"
    r"helpful|helped|wonderful|brilliant|superb|professional|knowledgeable|exceeded)\b"
)

# --- Messages -----------------------------------------------------------------------------------

_WHY = {
    "fr": (
        "l'ACPR (recommandation 2016-R-01) juge déloyale la diffusion d'avis, de notes ou de "
        "recommandations à l'initiative du professionnel, et la règle SEC 206(4)-1 impose des "
        "mentions pour tout témoignage, recommandation ou notation de tiers."
    ),
    "en": (
        "the ACPR (Recommendation 2016-R-01) deems reviews, ratings and recommendations published "
        "on the firm's own initiative unfair, and the SEC Marketing Rule 206(4)-1 requires "
        "disclosures for any testimonial, endorsement or third-party rating."
    ),
}
_WHAT = {
    "stars": ("Note en étoiles", "Star rating"),
    "rating": ("Note chiffrée", "Numeric rating"),
    "review_count": ("Nombre d'avis", "Number of reviews"),
    "review_site": ("Plateforme d'avis", "Review platform"),
    "quote": ("Éloge de client cité", "Quoted client praise"),
    "attribution": ("Propos attribués à un client", "Statement attributed to a client"),
}
_FIX = {
    "rating": {
        "fr": (
            "Retirer la note, ou citer sa source, sa date et le nombre d'avis sans les "
            "sélectionner, et obtenir l'accord de la conformité."
        ),
        "en": (
            "Remove the rating, or state who rated, when, on how many reviews and whether it was "
            "paid for, and get compliance's approval."
        ),
    },
    "testimonial": {
        "fr": (
            "Retirer le témoignage, ou préciser qu'il émane d'un client, s'il est rémunéré et "
            "tout conflit d'intérêts, et obtenir l'accord de la conformité."
        ),
        "en": (
            "Remove the testimonial, or disclose whether the person is a client, whether they "
            "were paid and any conflict of interest, and get compliance's approval."
        ),
    },
}
_FIX_KIND = {
    "stars": "rating",
    "rating": "rating",
    "review_count": "rating",
    "review_site": "rating",
    "quote": "testimonial",
    "attribution": "testimonial",
}

_STOPWORDS = {
    "fr": set(
        "le la les des du de un une et est sont pour avec dans sur vous nous votre vos notre nos "
        "pas ne qui que au aux ce cette ces en par plus ou il elle ils leur très merci je j mon "
        "ma mes son sa ses depuis chez tout tous toute bien aussi mais comme sans".split()
    ),
    "en": set(
        "the a an and is are for with in on you we your our not no who that to of at this these "
        "by more or it they their be very thanks i my me he she his her since all well also but "
        "as without".split()
    ),
}


def _plain(text):
    """Case folded, without accents nor typographic apostrophes: for comparing words only."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).casefold().replace("’", "'")


def guess_language(text):
    """The language ("fr" or "en") whose common words the text uses most; a tie: the site's."""
    tokens = re.findall(r"[^\W\d_]+", _plain(text))
    scores = {lang: sum(t in words for t in tokens) for lang, words in _STOPWORDS.items()}
    if scores["fr"] != scores["en"]:
        return max(scores, key=scores.get)
    default = (settings.LANGUAGE_CODE or "en")[:2]
    return default if default in scores else "en"


# --- Matching -----------------------------------------------------------------------------------


def _quotes(text):
    for pattern in _QUOTES:
        for match in pattern.finditer(text):
            start, end = match.span()
            after = _ATTRIBUTION_AFTER.match(text, end)
            before = _ROLE_BEFORE.search(text[max(0, start - 80) : start])
            if after:
                end = after.end()
            if after or before or _PRAISE.search(_plain(match["body"])):
                yield "quote", start, end


def find(text):
    """(kind, start, end) of every review or endorsement in the text, without overlaps."""
    folded = text.casefold()
    candidates = list(_quotes(text))
    for kind, needles, pattern in _PATTERNS:
        if any(needle in folded for needle in needles):
            candidates.extend((kind, *m.span()) for m in pattern.finditer(text))
    for needles, pattern in _ATTRIBUTIONS:
        if any(needle in folded for needle in needles):
            candidates.extend(("attribution", *m.span()) for m in pattern.finditer(text))
    kept = []
    for kind, start, end in sorted(candidates, key=lambda c: (c[1], -c[2])):
        while end > start and text[end - 1].isspace():
            end -= 1
        if end > start and not any(start < e and s < end for _, s, e in kept):
            kept.append((kind, start, end))
    return kept


def _message(kind, lang, excerpt):
    excerpt = " ".join(excerpt.split())
    if len(excerpt) > 60:
        excerpt = excerpt[:59].rstrip() + "…"
    if lang == "fr":
        return f"{_WHAT[kind][0]} (« {excerpt} ») : {_WHY['fr']}"
    return f"{_WHAT[kind][1]} (“{excerpt}”): {_WHY['en']}"


class TestimonialCheck(Check):
    """Flag reviews and endorsements, which regulators treat as testimonial content."""

    def run(self, subject, found):
        text = subject.text or ""
        spans = find(text)
        if not spans:
            return
        # An earlier check (the lexicon) may already have flagged the same words as testimonial.
        covered = [
            (f.start, f.end)
            for f in found
            if f.category == Category.TESTIMONIAL and f.start is not None and f.end is not None
        ]
        lang = guess_language(text)
        for kind, start, end in spans:
            if any(s <= start and end <= e for s, e in covered):
                continue
            yield Finding(
                code=f"testimonial.{kind}",
                category=Category.TESTIMONIAL,
                severity=Severity.WARN,
                message=_message(kind, lang, text[start:end]),
                fix=_FIX[_FIX_KIND[kind]][lang],
                start=start,
                end=end,
                data={"kind": kind, "language": lang},
            )


__all__ = ["TestimonialCheck", "find", "guess_language"]
