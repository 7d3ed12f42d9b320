"""Required disclaimers: the legal mentions a post must carry when their conditions hold.

A Disclaimer applies when it is enabled and its networks (empty: all), teams (empty: all) and
categories (empty: always; else a finding of one of them by an earlier check) match, and its
language is the post's: the language the text is written in, by its common words (on a tie, the
language of the lexicon entries found). The mention is found whatever the case, accents, spacing,
punctuation, quotes and apostrophes, and invisible characters. On the networks where the admin
accepts it (X, short of space), a link to the full mention does instead.
"""

import re
import unicodedata
from collections import Counter

from django.conf import settings

from approvals import config

from .base import Category, Check, Finding
from .counting import count, find_urls, network_label
from .network import rules_for

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\u180e"))
_WORD = re.compile(r"[^\W_]+")


def words(text):
    """The words of a text, compared: compatibility forms, no accents, case folded."""
    text = unicodedata.normalize("NFKD", (text or "").translate(_INVISIBLE))
    text = "".join(char for char in text if not unicodedata.combining(char)).casefold()
    return _WORD.findall(text)


def contains_mention(text, mention):
    """Whether the text carries the mention, as words in order, whatever lies between them
    (spaces, line breaks, punctuation, straight or typographic quotes and apostrophes)."""
    wanted = words(mention)
    if not wanted:
        return True
    return f" {' '.join(wanted)} " in f" {' '.join(words(text))} "


def _url_key(url):
    url = (url or "").strip().casefold()
    url = re.sub(r"^[a-z][a-z0-9+.-]*://", "", url).removeprefix("www.")
    return url.rstrip("/")


def contains_link(subject, link_url):
    """Whether the text (with or without the scheme) or the attached link is the mention's page."""
    key = _url_key(link_url)
    if not key:
        return False
    tld = frozenset({key.split("/", 1)[0].rsplit(".", 1)[-1]})
    urls = [subject.link, *(url.url for url in find_urls(subject.text, tlds=tld))]
    return any(
        found == key or found.startswith((key + "/", key + "?", key + "#"))
        for found in map(_url_key, urls)
    )


# A rough guess of the text's language, for disclaimers not called for by a finding.
_STOPWORDS = {
    "fr": set(
        "le la les des du de un une et est sont pour avec dans sur vous nous votre vos notre nos "
        "pas ne qui que au aux ce cette ces en par plus ou il elle ils leur l d qu c n".split()
    ),
    "en": set(
        "the an and is are for with in you we your our not no who that to of at this these by "
        "more or it they their be".split()  # not "a" nor "on": French words too
    ),
}


def guess_language(text, hints=()):
    """The text's language by its common words; on a tie, the most frequent of `hints` (the
    languages of the lexicon entries found), else the site's language."""
    tokens = words(text)
    scores = {language: sum(t in stop for t in tokens) for language, stop in _STOPWORDS.items()}
    if scores["fr"] != scores["en"]:
        return max(scores, key=scores.get)
    if hints := [hint for hint in hints if hint]:
        return Counter(hints).most_common(1)[0][0]
    return settings.LANGUAGE_CODE[:2]


class DisclaimerCheck(Check):
    """Report each required mention the text lacks, with what to insert."""

    def run(self, subject, found):
        language = None
        for disclaimer in config.current().disclaimers:
            networks = self._networks(disclaimer, subject)
            if networks is None:
                continue
            teams = {team.name for team in disclaimer.teams.all()}
            if teams and subject.team not in teams:
                continue
            triggers = [f for f in found if f.category in (disclaimer.categories or [])]
            if disclaimer.categories and not triggers:
                continue
            if language is None:
                hints = [f.data.get("language") for f in found]
                language = guess_language(subject.text, hints)
            if disclaimer.language != language:
                continue
            if contains_mention(subject.text, disclaimer.text):
                continue
            yield from self._missing(disclaimer, subject, networks, triggers)

    def _networks(self, disclaimer, subject):
        """The subject's networks the disclaimer applies to (sorted), or None if it does not."""
        if not disclaimer.networks:
            return sorted(subject.networks)
        networks = sorted(set(disclaimer.networks) & subject.networks)
        return networks or None

    def _missing(self, disclaimer, subject, networks, triggers):
        by_link = set()
        if disclaimer.link_url:
            by_link = set(disclaimer.link_allowed_on or []) & set(networks)
        if by_link and by_link == set(networks) and contains_link(subject, disclaimer.link_url):
            return
        insert = disclaimer.text
        if by_link and by_link == set(networks) and self._short_of_space(subject, disclaimer):
            insert = " " + disclaimer.link_url
        message = f"Required mention missing: “{disclaimer.text}”"
        if by_link:
            on = ", ".join(network_label(network) for network in sorted(by_link))
            message += f" (on {on}, a link to {disclaimer.link_url} does instead)"
        if triggers:
            message += f", because of {', '.join(sorted({f.category for f in triggers}))} wording"
        yield Finding(
            code="disclaimer.missing",
            category=Category.DISCLAIMER,
            severity=disclaimer.severity,
            message=message + ".",
            fix=f"Add: {disclaimer.text}",
            network=networks[0] if len(networks) == 1 else "",
            data={
                "disclaimer_id": disclaimer.pk,
                "insert": insert,
                "text": disclaimer.text,
                **({"link_url": disclaimer.link_url} if by_link else {}),
                "networks": networks,
            },
        )

    def _short_of_space(self, subject, disclaimer):
        """Whether the full mention would not fit on a network where the link is accepted."""
        with_mention = f"{subject.text.rstrip()} {disclaimer.text}"
        rules = rules_for(set(disclaimer.link_allowed_on or []) & subject.networks)
        return any(count(with_mention, subject.link, r) > r.max_length for r in rules.values())


__all__ = ["DisclaimerCheck", "contains_mention", "guess_language", "words"]
