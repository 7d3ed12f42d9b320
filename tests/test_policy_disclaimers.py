"""Required disclaimers: a mention missing where its conditions hold (category found earlier,
network, team, language), found however written, a link accepted on X; admin edits ledgered."""

import importlib

import pytest
from django.urls import reverse

from approvals import policy
from approvals.models import Disclaimer, LedgerEntry, LexiconEntry, NetworkRule
from approvals.policy import Finding, Subject
from approvals.policy.disclaimers import DisclaimerCheck, contains_mention, guess_language

pytestmark = pytest.mark.django_db

PERF_FR = "Les performances passées ne préjugent pas des performances futures."
PERF_EN = "Past performance is not a reliable indicator of future results."
FR_TEXT = "Notre fonds a progressé de 12 % en 2024 : une belle performance pour nos clients."
EN_TEXT = "Our fund returned 12% in 2024, a fine performance for our clients."


def performance(language="fr"):
    """What the lexicon check reports on performance wording, for the check to read."""
    return Finding(
        code="lexicon.performance",
        category="performance",
        severity="warn",
        message="Performance wording",
        start=0,
        end=5,
        data={"language": language},
    )


def run(text, found=(), networks=(), team="", link=""):
    subject = Subject(text=text, link=link, networks=frozenset(networks), team=team)
    return list(DisclaimerCheck().run(subject, list(found)))


@pytest.fixture
def mentions(db):
    """Our own disclaimers instead of the shipped ones."""
    Disclaimer.objects.all().delete()
    return {
        "fr": Disclaimer.objects.create(
            name="Perf FR", language="fr", text=PERF_FR, categories=["performance"]
        ),
        "en": Disclaimer.objects.create(
            name="Perf EN",
            language="en",
            text=PERF_EN,
            categories=["performance"],
            severity="warn",
        ),
    }


def test_performance_wording_without_the_mention_is_reported_with_what_to_insert(mentions):
    [finding] = run(FR_TEXT, [performance()], networks=["linkedin"])
    assert finding.code == "disclaimer.missing" and finding.category == "disclaimer"
    assert finding.severity == "block"  # the row's
    assert PERF_FR in finding.message and "performance wording" in finding.message
    assert finding.fix == f"Add: {PERF_FR}"
    assert finding.data["disclaimer_id"] == mentions["fr"].pk
    assert finding.data["insert"] == PERF_FR
    assert finding.network == "linkedin"

    [finding] = run(EN_TEXT, [performance("en")])
    assert finding.data["disclaimer_id"] == mentions["en"].pk and finding.severity == "warn"


def test_no_performance_finding_no_mention_required(mentions):
    assert run(FR_TEXT, []) == []
    other = Finding(code="lexicon.x", category="superlative", severity="warn", message="")
    assert run(FR_TEXT, [other]) == []


@pytest.mark.parametrize(
    "written",
    [
        PERF_FR,
        "LES PERFORMANCES PASSÉES NE PRÉJUGENT PAS DES PERFORMANCES FUTURES",
        "les   performances\npassees ne prejugent pas\u00a0des performances futures !",
        "Les perfor\u200bmances passées ne préjugent pas des performances futures.",
        "(Les performances passées ne préjugent pas des performances futures)",
    ],
)
def test_the_mention_is_found_whatever_its_spelling(mentions, written):
    assert run(f"{FR_TEXT}\n{written}", [performance()]) == []


@pytest.mark.parametrize(
    "written, missing",
    [
        ("Past performance isn’t a reliable indicator of future results", False),
        ("PAST PERFORMANCE ISN'T A RELIABLE INDICATOR OF FUTURE RESULTS.", False),
        ("“Past performance isn`t a reliable indicator of future results.”", False),
        ("Past performance isn’t a reliable indicator.", True),  # cut short
    ],
)
def test_apostrophes_quotes_and_case(mentions, written, missing):
    mentions["en"].text = "Past performance isn't a reliable indicator of future results."
    mentions["en"].save()
    assert bool(run(f"{EN_TEXT} {written}", [performance("en")])) is missing


def test_typographic_apostrophes_match_straight_ones():
    mention = "Don't invest unless you're prepared to lose all the money you invest."
    assert contains_mention(
        "DON’T invest unless you’re prepared to lose all the money you invest", mention
    )
    assert contains_mention(
        "Don`t invest unless you´re prepared to lose all the money you invest", mention
    )
    assert not contains_mention("Don't invest unless you're prepared to lose", mention)


def test_the_language_of_the_text_picks_the_mention(mentions):
    ids = {language: d.pk for language, d in mentions.items()}
    # The text is French: the French mention, even for an English lexicon term found in it.
    assert [f.data["disclaimer_id"] for f in run(FR_TEXT, [performance("en")])] == [ids["fr"]]
    assert [f.data["disclaimer_id"] for f in run(EN_TEXT, [performance("fr")])] == [ids["en"]]
    # Too short to tell: the language of the entries found decides.
    short = "Performance 2024 : +12 %"
    assert [f.data["disclaimer_id"] for f in run(short, [performance("en")])] == [ids["en"]]
    assert [f.data["disclaimer_id"] for f in run(short, [performance("fr")])] == [ids["fr"]]
    assert guess_language(FR_TEXT) == "fr" and guess_language(EN_TEXT) == "en"


def test_network_scoping(mentions):
    mentions["fr"].networks = ["linkedin", "x"]
    mentions["fr"].save()
    assert run(FR_TEXT, [performance()], networks=["facebook"]) == []
    [finding] = run(FR_TEXT, [performance()], networks=["facebook", "x"])
    assert finding.network == "x" and finding.data["networks"] == ["x"]
    assert run(FR_TEXT, [performance()]) == []  # no network: scoped disclaimers do not apply


def test_team_scoping(mentions, world):
    mentions["fr"].teams.set([world.paris])
    assert run(FR_TEXT, [performance()], team="Lyon") == []
    assert len(run(FR_TEXT, [performance()], team="Paris")) == 1


def test_always_required_disclaimer_and_disabled_one(mentions):
    Disclaimer.objects.create(
        name="Promo", language="fr", text="Communication à caractère publicitaire."
    )
    [finding] = run("Venez nous voir samedi à l'agence.", [])
    assert finding.data["insert"] == "Communication à caractère publicitaire."
    Disclaimer.objects.filter(name="Promo").update(enabled=False)
    assert run("Venez nous voir samedi à l'agence.", []) == []


def test_x_accepts_a_link_to_the_full_mention_where_the_admin_allows_it(mentions):
    fr = mentions["fr"]
    fr.link_url = "https://www.banque.example/mentions-legales"
    fr.link_allowed_on = ["x"]
    fr.save()
    with_link = f"{FR_TEXT} banque.example/mentions-legales"
    assert run(with_link, [performance()], networks=["x"]) == []
    assert run(FR_TEXT, [performance()], networks=["x"], link=fr.link_url) == []
    # LinkedIn is not short of space: the mention itself is needed there.
    [finding] = run(with_link, [performance()], networks=["x", "linkedin"])
    assert finding.data["insert"] == PERF_FR
    # Without the link on X: the finding offers the link when the mention would not fit.
    [finding] = run(FR_TEXT, [performance()], networks=["x"])
    assert finding.data["insert"] == PERF_FR  # it fits: the full mention
    assert "a link to https://www.banque.example/mentions-legales does instead" in finding.message
    [finding] = run("a" * 250 + " performance", [performance()], networks=["x"])
    assert finding.data["insert"] == " https://www.banque.example/mentions-legales"
    assert finding.data["link_url"] == fr.link_url


def test_the_link_is_refused_where_the_admin_did_not_allow_it(mentions):
    fr = mentions["fr"]
    fr.link_url, fr.link_allowed_on = "https://banque.example/ml", ["x"]
    fr.save()
    [finding] = run(f"{FR_TEXT} https://banque.example/ml", [performance()], networks=["mastodon"])
    assert finding.code == "disclaimer.missing"


def test_through_the_entry_point_after_the_other_checks(mentions):
    """End to end: a lexicon finding (when the lexicon check is there) calls for the mention."""
    findings = policy.check(Subject(text=FR_TEXT, networks=frozenset({"linkedin"})))
    if not any(f.category == "performance" for f in findings):
        pytest.skip("no check reports performance wording on this text yet")
    assert any(f.code == "disclaimer.missing" for f in findings)
    fixed = policy.check(Subject(text=f"{FR_TEXT} {PERF_FR}", networks=frozenset({"linkedin"})))
    assert not any(f.code == "disclaimer.missing" for f in fixed)


def test_shipped_disclaimers_end_to_end(db):
    """With the shipped lexicon and disclaimers: the editor is offered the French mention."""
    subject = Subject(text=FR_TEXT, networks=frozenset({"linkedin"}))
    findings = [f for f in policy.check(subject) if f.code == "disclaimer.missing"]
    if not findings:
        pytest.skip("no check reports performance wording on this text yet")
    assert [f.data["insert"] for f in findings] == [PERF_FR]
    fixed = Subject(text=f"{FR_TEXT}\n{PERF_FR}", networks=frozenset({"linkedin"}))
    assert not [f for f in policy.check(fixed) if f.category == "disclaimer"]


def test_defaults_shipped_by_the_migration_and_reversible(db):
    shipped = importlib.import_module("approvals.migrations.0009_default_disclaimers")
    names = {row[0] for row in shipped.DISCLAIMERS}
    texts = set(Disclaimer.objects.filter(name__in=names).values_list("text", flat=True))
    assert PERF_FR in texts and PERF_EN in texts
    assert Disclaimer.objects.get(text=PERF_FR).categories == ["performance"]
    from django.apps import apps

    shipped.remove(apps, None)
    assert not Disclaimer.objects.filter(name__in=names).exists()
    shipped.create(apps, None)
    assert Disclaimer.objects.filter(name__in=names).count() == len(names)


# --- Admin: every edit is a ledger entry with before and after ------------------------------------


def entries(prefix):
    return list(LedgerEntry.objects.filter(event__startswith=prefix).order_by("seq"))


def disclaimer_form(world, **fields):
    return {
        "name": "Avertissement crypto",
        "text": "Les crypto-actifs sont risqués.",
        "language": "fr",
        "networks": '["x"]',
        "teams": [world.lyon.pk],
        "categories": '["crypto"]',
        "link_url": "https://banque.example/crypto",
        "link_allowed_on": '["x"]',
        "severity": "block",
        "enabled": "on",
        **fields,
    }


def test_disclaimer_admin_add_change_delete_are_ledgered(client, world):
    client.force_login(world.carla)
    response = client.post(reverse("admin:approvals_disclaimer_add"), disclaimer_form(world))
    assert response.status_code == 302, response.content.decode()[:3000]
    disclaimer = Disclaimer.objects.get(name="Avertissement crypto")
    [added] = entries("admin.disclaimer.")
    assert added.event == "admin.disclaimer.added" and added.actor == "carla"
    assert added.payload["before"] is None
    after = added.payload["after"]
    assert after["categories"] == ["crypto"] and after["networks"] == ["x"]
    assert after["teams"] == ["Lyon"] and after["link_allowed_on"] == ["x"]

    response = client.post(
        reverse("admin:approvals_disclaimer_change", args=[disclaimer.pk]),
        disclaimer_form(world, teams=[world.paris.pk], categories='["crypto", "performance"]'),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    changed = entries("admin.disclaimer.")[-1]
    assert changed.event == "admin.disclaimer.changed"
    assert changed.payload["before"]["teams"] == ["Lyon"]
    assert changed.payload["after"]["teams"] == ["Paris"]
    assert changed.payload["after"]["categories"] == ["crypto", "performance"]

    response = client.post(
        reverse("admin:approvals_disclaimer_delete", args=[disclaimer.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    deleted = entries("admin.disclaimer.")[-1]
    assert deleted.event == "admin.disclaimer.deleted"
    assert deleted.payload["before"]["text"] == "Les crypto-actifs sont risqués."


def test_disclaimer_admin_refuses_unknown_categories_and_a_link_without_url(client, world):
    client.force_login(world.carla)
    response = client.post(
        reverse("admin:approvals_disclaimer_add"),
        disclaimer_form(world, categories='["performances"]', link_url=""),
    )
    assert response.status_code == 200
    content = response.content.decode()
    assert "Unknown categories: performances" in content
    assert "Needed to accept a link" in content
    assert not entries("admin.disclaimer.")


def test_network_rule_and_lexicon_admin_edits_are_ledgered(client, world):
    client.force_login(world.carla)
    x = NetworkRule.objects.get(network="x")
    response = client.post(
        reverse("admin:approvals_networkrule_change", args=[x.pk]),
        {
            "network": "x",
            "max_length": "25000",
            "weighted": "on",
            "url_length": "23",
            "max_hashtags": "2",
            "max_mentions": "5",
            "allowed_domains": "",
            "denied_domains": " casino.example \n\nhttps://bad.example/path\n",
            "refuse_shorteners": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    [entry] = entries("admin.networkrule.")
    assert entry.event == "admin.networkrule.changed"
    assert entry.payload["before"]["max_length"] == 280
    assert entry.payload["after"]["max_length"] == 25000
    assert entry.payload["after"]["denied_domains"] == "casino.example\nhttps://bad.example/path"

    response = client.post(
        reverse("admin:approvals_networkrule_change", args=[x.pk]),
        {"network": "x", "max_length": "280", "denied_domains": "not a domain"},
    )
    assert response.status_code == 200 and "Not domain names: not a domain" in (
        response.content.decode()
    )

    response = client.post(
        reverse("admin:approvals_lexiconentry_add"),
        {
            "term": "placement miracle zzz",
            "language": "fr",
            "category": "guarantee",
            "severity": "block",
            "explanation": "Aucun rendement n'est garanti.",
            "alternative": "objectif de rendement",
            "exceptions": "",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    entry = LexiconEntry.objects.get(term="placement miracle zzz", language="fr")
    [added] = entries("admin.lexiconentry.")
    assert added.payload["after"]["term"] == "placement miracle zzz"
    assert added.payload["object_id"] == entry.pk


def test_bulk_delete_in_the_admin_is_ledgered_one_by_one(client, world, mentions):
    client.force_login(world.carla)
    response = client.post(
        reverse("admin:approvals_disclaimer_changelist"),
        {
            "action": "delete_selected",
            "_selected_action": [d.pk for d in mentions.values()],
            "post": "yes",
        },
    )
    assert response.status_code == 302
    assert not Disclaimer.objects.exists()
    deleted = entries("admin.disclaimer.deleted")
    assert sorted(e.payload["object"] for e in deleted) == ["Perf EN", "Perf FR"]
