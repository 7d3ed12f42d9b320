"""Reviews and endorsements: star ratings, scores, review counts and platforms, quoted client
praise and attributed client statements, each on its exact span of the original text."""

import pytest

from approvals.policy import CHECKS, Finding, Subject, check
from approvals.policy.testimonials import TestimonialCheck, find, guess_language


def found(text):
    return [(f.code, text[f.start : f.end]) for f in TestimonialCheck().run(Subject(text=text), [])]


@pytest.mark.parametrize(
    "text, expected",
    [
        # Star ratings.
        ("Nos clients nous notent ★★★★★ !", [("stars", "★★★★★")]),
        ("⭐⭐⭐⭐ pour notre service", [("stars", "⭐⭐⭐⭐")]),
        ("Avis : ⭐️⭐️⭐️⭐️⭐️", [("stars", "⭐️⭐️⭐️⭐️⭐️")]),
        ("Service ★★★★☆ selon vous", [("stars", "★★★★☆")]),
        ("4,8 ★ sur Google", [("stars", "4,8 ★")]),
        ("Un cabinet 5 étoiles", [("stars", "5 étoiles")]),
        ("Un service cinq étoiles !", [("stars", "cinq étoiles")]),
        ("Five stars from our clients.", [("stars", "Five stars")]),
        ("A 5-star advisory firm", [("stars", "5-star")]),
        ("Rated 4.5 stars.", [("rating", "Rated 4.5 stars")]),
        ("Noté 4,5 étoiles par 300 clients", [("rating", "Noté 4,5 étoiles par 300 clients")]),
        # Numeric ratings.
        ("Noté 5/5 par nos clients", [("rating", "Noté 5/5")]),
        ("Une note de 4.8/5 !", [("rating", "4.8/5")]),
        ("Satisfaction : 4,9 / 5", [("rating", "4,9 / 5")]),
        ("4.7 out of 5 on average", [("rating", "4.7 out of 5")]),
        ("Note moyenne 4,9", [("rating", "Note moyenne 4,9")]),
        ("Note moyenne 4,9 sur 1 200 avis", [("rating", "Note moyenne 4,9 sur 1 200 avis")]),
        ("Rated 4.9 by 1,200 clients.", [("rating", "Rated 4.9 by 1,200 clients")]),
        ("An average rating of 4.8/5", [("rating", "average rating of 4.8/5")]),
        ("Noté 9,5/10 par nos clients", [("rating", "9,5/10")]),
        # Review counts and platforms.
        ("Plus de 500 avis clients", [("review_count", "500 avis clients")]),
        ("Based on 1,200 reviews", [("review_count", "1,200 reviews")]),
        ("Découvrez nos 300 témoignages", [("review_count", "300 témoignages")]),
        ("Retrouvez-nous sur Trustpilot", [("review_site", "Trustpilot")]),
        ("Read our Google reviews", [("review_site", "Google reviews")]),
        ("Lisez nos avis Google", [("review_site", "avis Google")]),
        (
            "4,9 sur Avis Vérifiés (1 250 avis)",
            [("review_site", "Avis Vérifiés"), ("review_count", "1 250 avis")],
        ),
        # Quoted praise, with or without attribution.
        (
            "« Excellent conseiller, je recommande ! »",
            [("quote", "« Excellent conseiller, je recommande ! »")],
        ),
        (
            "« Merci pour votre écoute » — Marie, cliente depuis 2015",
            [("quote", "« Merci pour votre écoute » — Marie, cliente depuis 2015")],
        ),
        (
            "“Great advisor, very helpful.” - John D.",
            [("quote", "“Great advisor, very helpful.” - John D.")],
        ),
        (
            '"Best decision I ever made," says our client Paul.',
            [("quote", '"Best decision I ever made," says our client Paul')],
        ),
        (
            "« J'ai ouvert mon PER en 2019 » — Sophie L.",
            [("quote", "« J'ai ouvert mon PER en 2019 » — Sophie L.")],
        ),
        (
            "Paul, client depuis 2010 : « Ils ont tout géré. »",
            [("quote", "« Ils ont tout géré. »")],
        ),
        ("„Wirklich super Beratung“", [("quote", "„Wirklich super Beratung“")]),
        # Attributions without quotation marks.
        (
            "Un accompagnement sur mesure.\n— Marie, cliente depuis 2015",
            [("attribution", "— Marie, cliente depuis 2015")],
        ),
        ("Top service. - John D.", [("attribution", "- John D.")]),
        (
            "Selon notre cliente Sophie, tout est simple.",
            [("attribution", "Selon notre cliente Sophie")],
        ),
        ("Simple and clear, says our client.", [("attribution", "says our client")]),
    ],
)
def test_each_kind_on_its_exact_span(text, expected):
    assert found(text) == [(f"testimonial.{kind}", words) for kind, words in expected]


@pytest.mark.parametrize(
    "text",
    [
        "Nos conseillers vous accueillent samedi.",
        "4 % de frais d'entrée, 2 % de frais de gestion.",
        "Rated: see our fees page",
        "Rendez-vous le 12/05/2024 à Lyon - Jean-Pierre vous attend.",
        "Rendez-vous le 5/5/2025 à l'agence.",
        "Le fonds « Avenir Actions » investit en Europe.",
        "Lisez la mention « Les performances passées ne préjugent pas des performances futures ».",
        "Votre avis d'imposition 2024 arrive : 3 avis d'imposition à vérifier.",
        "Une étoile montante de la gestion ⭐",
        "⭐ Nouveau ⭐",
        'Our "Green Bond" fund invests in Europe.',
        "Ouvert du lundi au vendredi, 9h-18h.",
        "Taux de 3,5 % brut ; 1/2 part fiscale en plus.",
        "Investing involves risk, including possible loss of principal.",
        "Top 5 des questions sur le PER",
        "Nos 12 conseillers couvrent 3 régions.",
        "Version 2.5 de notre application.",
    ],
)
def test_ordinary_sentences_are_not_flagged(text):
    assert found(text) == []


def test_finding_fields_french():
    text = "« Excellent conseiller, je recommande ! » — Marie, cliente depuis 2015"
    [finding] = TestimonialCheck().run(Subject(text=text), [])
    assert isinstance(finding, Finding)
    assert (finding.code, finding.category, finding.severity) == (
        "testimonial.quote",
        "testimonial",
        "warn",
    )
    assert (finding.start, finding.end) == (0, len(text))
    assert "2016-R-01" in finding.message and "206(4)-1" in finding.message
    assert finding.message.startswith("Éloge de client cité")
    assert "conformité" in finding.fix
    assert finding.data == {"kind": "quote", "language": "fr"}


def test_finding_fields_english():
    text = "Our clients rate us 4.9/5 on Trustpilot!"
    findings = list(TestimonialCheck().run(Subject(text=text), []))
    assert [(f.code, text[f.start : f.end]) for f in findings] == [
        ("testimonial.rating", "4.9/5"),
        ("testimonial.review_site", "Trustpilot"),
    ]
    for finding in findings:
        assert finding.severity == "warn" and finding.category == "testimonial"
        assert "SEC Marketing Rule 206(4)-1" in finding.message
        assert "2016-R-01" in finding.message
        assert "compliance" in finding.fix
        assert finding.data["language"] == "en"


def test_spans_survive_text_before_and_after():
    text = "Bonjour !\n\n⭐⭐⭐⭐⭐ « Top conseillère » — Julie, cliente\nÀ bientôt 👋"
    assert found(text) == [
        ("testimonial.stars", "⭐⭐⭐⭐⭐"),
        ("testimonial.quote", "« Top conseillère » — Julie, cliente"),
    ]


def test_no_overlapping_findings():
    text = "« Service 5 étoiles, noté 5/5 sur Trustpilot » — Marc D."
    assert found(text) == [("testimonial.quote", text)]
    spans = find("Noté 4,8/5 ★ par 1 200 clients")
    assert len(spans) == 1


def test_words_already_flagged_by_the_lexicon_are_not_flagged_twice():
    text = "Un service 5 étoiles, noté 4,9/5."
    start = text.index("5 étoiles")
    earlier = Finding(
        code="lexicon.testimonial",
        category="testimonial",
        severity="warn",
        message="…",
        start=start,
        end=start + len("5 étoiles"),
    )
    findings = list(TestimonialCheck().run(Subject(text=text), [earlier]))
    assert [text[f.start : f.end] for f in findings] == ["noté 4,9/5"]


def test_guess_language():
    assert guess_language("Merci pour votre accompagnement, je recommande") == "fr"
    assert guess_language("Thanks for your help, we recommend them") == "en"


def test_registered_after_the_lexicon():
    path = "approvals.policy.testimonials.TestimonialCheck"
    assert CHECKS.count(path) == 1
    if "approvals.policy.lexicon.LexiconCheck" in CHECKS:
        assert CHECKS.index(path) == CHECKS.index("approvals.policy.lexicon.LexiconCheck") + 1


@pytest.mark.django_db
def test_through_the_entry_point():
    text = "Ravie de mon conseiller ! ★★★★★ « Parfait, merci » — Anne, cliente depuis 2018"
    findings = [f for f in check(Subject(text=text)) if f.code.startswith("testimonial.")]
    assert [(f.code, text[f.start : f.end]) for f in findings] == [
        ("testimonial.stars", "★★★★★"),
        ("testimonial.quote", "« Parfait, merci » — Anne, cliente depuis 2018"),
    ]


@pytest.mark.django_db
def test_a_rating_found_by_two_checks_is_reported_once():
    from approvals.policy import Subject, check

    text = "Noté 5 étoiles par nos clients"
    findings = [f for f in check(Subject(text=text)) if f.category == "testimonial"]
    assert [(text[f.start : f.end], f.code) for f in findings] == [
        ("Noté 5 étoiles", "testimonial.rating")
    ]
