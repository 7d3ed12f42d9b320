"""Network rules: each network's length as it counts it (X weighted, URLs 23), hashtag and
mention limits, link rules (deny and allow lists, subdomains, shorteners, IDN, attached link)."""

import pytest
from django.urls import reverse

from approvals import policy
from approvals.models import NetworkRule
from approvals.policy import Subject
from approvals.policy.counting import count, find_urls
from approvals.policy.links import LinkCheck, domain_key
from approvals.policy.network import HashtagMentionCheck, NetworkLengthCheck

pytestmark = pytest.mark.django_db


def rule(network):
    return NetworkRule.objects.get(network=network)


def length_findings(text, *networks, link=""):
    subject = Subject(text=text, link=link, networks=frozenset(networks))
    return list(NetworkLengthCheck().run(subject, []))


def link_findings(text, *networks, link=""):
    subject = Subject(text=text, link=link, networks=frozenset(networks))
    return [f for f in LinkCheck().run(subject, []) if f.code != "link.scheme"]


# --- Counting ------------------------------------------------------------------------------------


def test_x_ascii_280_fits_and_281_is_one_over():
    assert count("a" * 280, "", rule("x")) == 280
    assert length_findings("a" * 280, "x") == []

    [finding] = length_findings("a" * 281, "x")
    assert finding.code == "network.too_long" and finding.severity == "block"
    assert finding.category == "network" and finding.network == "x"
    assert finding.message.startswith("1 character over X's limit of 280")
    assert "URLs count 23" in finding.message
    assert finding.fix == "Shorten by 1 character."
    assert (finding.start, finding.end) == (280, 281)  # the overflow, in the original text
    assert finding.data == {"used": 281, "limit": 280, "over": 1}


def test_x_counts_cjk_double_and_latin_accents_single():
    x = rule("x")
    assert count("你好世界", "", x) == 8
    assert count("こんにちは", "", x) == 10
    latin = "Épargne très sûre, à 3 % — “bien” ‘ok’"
    assert count(latin, "", x) == len(latin)
    assert count("…", "", x) == 2  # U+2026 is outside the light ranges
    assert count("e\u0301", "", x) == 1  # NFC first: é
    [finding] = length_findings("a" * 270 + "你" * 6, "x")
    assert finding.message.startswith("2 characters over X's limit of 280")
    assert finding.start == 270 + 5  # the sixth CJK character is the one that goes over


def test_x_counts_every_emoji_sequence_as_two():
    x = rule("x")
    for emoji in ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "1️⃣", "❤️", "👩🏾‍💻"]:
        assert count(emoji, "", x) == 2, emoji
    assert count("Merci 🙏🙏", "", x) == 6 + 4
    assert length_findings("a" * 278 + "👨‍👩‍👧‍👦", "x") == []
    [finding] = length_findings("a" * 279 + "👍", "x")
    assert finding.data["over"] == 1


def test_x_counts_every_url_as_23_whatever_its_length():
    x = rule("x")
    long_url = "https://www.example-bank.fr/" + "fonds/" * 40
    assert count(long_url, "", x) == 23
    assert count("https://t.fr", "", x) == 23
    assert count("Voir example.fr.", "", x) == 5 + 23 + 1  # written without a scheme, too
    assert count("Voir", long_url, x) == 4 + 1 + 23  # the attached link, after a space
    text = "a" * 256 + " " + long_url  # 257 + 23 = 280
    assert length_findings(text, "x") == []
    assert length_findings(text + "!", "x")[0].data["over"] == 1


def test_linkedin_counts_characters_up_to_3000_with_the_link_as_text():
    linkedin = rule("linkedin")
    assert count("你好👍", "", linkedin) == 3
    assert count("abc", "https://example.fr/x", linkedin) == 3 + 1 + 20
    assert length_findings("a" * 3000, "linkedin") == []
    [finding] = length_findings("a" * 2990, "linkedin", link="https://example.fr/abc")
    assert finding.network == "linkedin"
    assert finding.message == "13 characters over LinkedIn's limit of 3000."
    assert finding.start is None  # the text fits: the attached link goes over


def test_mastodon_500_with_urls_23():
    mastodon = rule("mastodon")
    url = "https://example.org/" + "x" * 200
    assert count(url, "", mastodon) == 23
    assert count("example.org", "", mastodon) == 11  # no scheme: plain text there
    assert count("Bonjour @alice@mastodon.social", "", mastodon) == len("Bonjour @alice")
    assert count("👨‍👩‍👧‍👦", "", mastodon) == 1  # grapheme clusters
    assert length_findings("a" * 476 + " " + url, "mastodon") == []  # 477 + 23
    [finding] = length_findings("a" * 477 + " " + url, "mastodon")
    assert finding.message == "1 character over Mastodon's limit of 500 (URLs count 23)."


def test_limits_are_the_admins_and_each_network_is_named():
    NetworkRule.objects.filter(network="linkedin").update(max_length=10)
    findings = length_findings("a" * 300, "x", "linkedin", "facebook")
    assert {(f.network, f.data["over"]) for f in findings} == {("x", 20), ("linkedin", 290)}
    assert any("X's limit of 280" in f.message for f in findings)
    assert any("LinkedIn's limit of 10" in f.message for f in findings)


def test_a_network_without_a_rule_falls_back_to_its_connector():
    NetworkRule.objects.filter(network="sandbox").delete()
    [finding] = length_findings("a" * 501, "sandbox")
    assert finding.data == {"used": 501, "limit": 500, "over": 1}
    assert length_findings("a" * 10**4, "nowhere") == []  # no rule, no connector: no limit


def test_length_checked_through_the_entry_point():
    findings = policy.check(Subject(text="a" * 281, networks=frozenset({"x", "sandbox"})))
    assert [f.code for f in findings if f.category == "network"] == ["network.too_long"]


# --- Hashtags and mentions -----------------------------------------------------------------------


def test_hashtags_over_the_limit_warn_on_each_extra_one():
    text = "Nos fonds #épargne #retraite #PEA #assurance #bourse"
    subject = Subject(text=text, networks=frozenset({"x", "linkedin"}))  # x: 3, linkedin: 5
    findings = list(HashtagMentionCheck().run(subject, []))
    assert [(f.network, text[f.start : f.end]) for f in findings] == [
        ("x", "#assurance"),
        ("x", "#bourse"),
    ]
    assert all(f.severity == "warn" and f.code == "network.too_many_hashtags" for f in findings)
    assert "5 hashtags: X allows 3" in findings[0].message


def test_mentions_over_the_limit_and_what_is_not_a_mention_or_hashtag():
    NetworkRule.objects.filter(network="x").update(max_mentions=1, max_hashtags=1)
    text = (
        "@alice et @bruno vous attendent (contact@banque.fr, https://medium.com/@x/#ancre, "
        "C#, #1) #épargne"
    )
    subject = Subject(text=text, networks=frozenset({"x"}))
    findings = list(HashtagMentionCheck().run(subject, []))
    assert [(f.code, text[f.start : f.end]) for f in findings] == [
        ("network.too_many_mentions", "@bruno")
    ]


# --- Links ---------------------------------------------------------------------------------------


def test_url_spans_point_at_the_text():
    text = "Voir https://ex.fr/a), (https://fr.wikipedia.org/wiki/A_(b)) et www.banque.fr."
    assert [text[u.start : u.end] for u in find_urls(text)] == [
        "https://ex.fr/a",
        "https://fr.wikipedia.org/wiki/A_(b)",
        "www.banque.fr",
    ]


def test_denied_domain_and_its_subdomains_whatever_the_case():
    NetworkRule.objects.filter(network="linkedin").update(denied_domains="casino.example\n")
    text = "Jouez sur https://WWW.Casino.Example/promo ou casino.example."
    findings = link_findings(text, "linkedin")
    assert [(f.code, text[f.start : f.end]) for f in findings] == [
        ("link.denied", "https://WWW.Casino.Example/promo"),
        ("link.denied", "casino.example"),
    ]
    assert all(f.severity == "block" and f.network == "linkedin" for f in findings)
    assert "www.casino.example" in findings[0].message
    assert link_findings("https://notcasino.example/", "linkedin") == []  # not a subdomain
    assert link_findings(text, "x") == []  # the rule is LinkedIn's


def test_userinfo_does_not_hide_the_real_host():
    NetworkRule.objects.filter(network="x").update(denied_domains="evil.example")
    [finding] = link_findings("https://banque.fr@evil.example/login", "x")
    assert finding.code == "link.denied" and finding.data["host"] == "evil.example"


def test_allow_list_refuses_every_other_domain():
    NetworkRule.objects.filter(network="x").update(
        allowed_domains="banque.fr\nhttps://amf-france.org/"
    )
    text = "https://www.banque.fr/fonds https://amf-france.org/x https://autre.fr/"
    [finding] = link_findings(text, "x")
    assert finding.code == "link.not_allowed" and text[finding.start : finding.end] == (
        "https://autre.fr/"
    )
    assert link_findings(text, "linkedin") == []


def test_shorteners_refused_where_the_rule_says():
    text = "Lien : bit.ly/3xYz et https://TinyURL.com/abc puis https://t.co/x"
    findings = link_findings(text, "x")
    assert [text[f.start : f.end] for f in findings] == [
        "bit.ly/3xYz",
        "https://TinyURL.com/abc",
        "https://t.co/x",
    ]
    assert all(
        f.code == "link.shortener" and f.fix == "Link to the final address." for f in findings
    )
    NetworkRule.objects.filter(network="x").update(refuse_shorteners=False)
    assert link_findings(text, "x") == []


def test_one_finding_per_link_for_networks_that_agree():
    [finding] = link_findings("https://lnkd.in/abc", "x", "linkedin")
    assert finding.network == "" and finding.data["networks"] == ["linkedin", "x"]
    assert "LinkedIn, X" in finding.message


def test_idn_domains_compare_in_punycode_both_ways():
    assert domain_key("Bänk.Example") == "xn--bnk-qla.example" == domain_key("xn--bnk-qla.example")
    NetworkRule.objects.filter(network="x").update(denied_domains="bänk.example")
    [finding] = link_findings("https://www.xn--bnk-qla.example/", "x")
    assert finding.code == "link.denied"
    NetworkRule.objects.filter(network="x").update(denied_domains="xn--bnk-qla.example")
    assert link_findings("https://BÄNK.example/offre", "x")[0].code == "link.denied"
    # A look-alike (Cyrillic а) is another domain: outside an allow list of the real one.
    NetworkRule.objects.filter(network="x").update(denied_domains="", allowed_domains="banque.fr")
    [finding] = link_findings("https://bаnque.fr/", "x")
    assert finding.code == "link.not_allowed" and finding.data["host"].startswith("xn--")


def test_the_attached_link_is_checked_without_a_span():
    [finding] = link_findings("Nos fonds", "x", link="https://bit.ly/abc")
    assert finding.code == "link.shortener" and finding.start is None
    assert finding.data["field"] == "link"
    assert finding.message.startswith("The attached link")


def test_other_schemes_warn():
    text = "Voir ftp://files.example/x et javascript:alert(1)"
    findings = [f for f in LinkCheck().run(Subject(text=text, networks=frozenset({"x"})), [])]
    assert [(f.code, f.severity, text[f.start : f.end]) for f in findings] == [
        ("link.scheme", "warn", "ftp://files.example/x"),
        ("link.scheme", "warn", "javascript:alert(1)"),
    ]


# --- Preview -------------------------------------------------------------------------------------


def test_preview_counts_as_the_network_rule(client, world):
    NetworkRule.objects.filter(network="sandbox").update(
        weighted=True, max_length=280, url_length=23
    )
    client.force_login(world.alice)
    response = client.post(
        reverse("post_preview"),
        {"text": "你好 https://example.fr/" + "x" * 100, "accounts": [world.lyon_sandbox.pk]},
    )
    assert response.status_code == 200
    preview = response.context["previews"][0]
    assert (preview["used"], preview["limit"], preview["left"]) == (28, 280, 252)


def test_preview_falls_back_to_the_connector_without_a_rule(client, world):
    NetworkRule.objects.filter(network="sandbox").delete()
    client.force_login(world.alice)
    response = client.post(
        reverse("post_preview"), {"text": "你好", "accounts": [world.lyon_sandbox.pk]}
    )
    preview = response.context["previews"][0]
    assert (preview["used"], preview["limit"]) == (2, 500)
