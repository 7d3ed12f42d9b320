"""Link rules per network: denied and allowed domains, URL shorteners, unusual schemes.

Every URL of the text is checked (with or without its scheme), and the attached link. Domains
match with their subdomains, whatever their case, and internationalized names are compared in
their ASCII (punycode) form on both sides, so “bänk.example” and “xn--bnk-qla.example” are one.
"""

import re
import unicodedata

from .base import Category, Check, Finding, Severity
from .counting import find_other_schemes, find_urls, network_label
from .network import stored_rules

SHORTENERS = frozenset(
    """
    bit.ly bitly.com tinyurl.com t.co goo.gl ow.ly buff.ly is.gd v.gd rebrand.ly cutt.ly
    shorturl.at lnkd.in tiny.cc t.ly rb.gy s.id bl.ink short.io shorte.st adf.ly trib.al dlvr.it
    tiny.one x.co qr.ae soo.gd clck.ru bit.do mcaf.ee su.pr db.tt wp.me
    """.split()
)

_DOTS = str.maketrans({"。": ".", "｡": ".", "．": "."})
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))


def domain_key(host):
    """A host name as compared: lower case, no trailing dot, each label in ASCII (punycode)."""
    host = unicodedata.normalize("NFKC", host.translate(_DOTS)).translate(_INVISIBLE)
    labels = []
    for label in host.lower().strip().strip(".").split("."):
        if not label:
            continue
        if not label.isascii():
            try:
                label = "xn--" + label.encode("punycode").decode("ascii")
            except UnicodeError:
                pass
        labels.append(label)
    return ".".join(labels)


def host_of(url):
    """The host a URL leads to (userinfo and port removed); written without a scheme too."""
    rest = url.split("://", 1)[1] if "://" in url else url
    authority = re.split(r"[/\\?#]", rest, maxsplit=1)[0]
    authority = authority.rsplit("@", 1)[-1]
    if authority.startswith("["):  # IPv6 literal
        return authority[1:].split("]", 1)[0].lower()
    return domain_key(re.sub(r":\d*$", "", authority))


def domain_list(value):
    """An admin's list, one per line; a pasted URL or a leading '*.' or '.' is forgiven."""
    domains = []
    for line in (value or "").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        line = line.removeprefix("*.").lstrip(".")
        domains.append(host_of(line) if "://" in line or "/" in line else domain_key(line))
    return [domain for domain in domains if domain]


def within(host, domains):
    """The entry of `domains` that `host` is, or is a subdomain of."""
    domains = domains if isinstance(domains, set | frozenset) else set(domains)
    labels = host.split(".")
    for index in range(len(labels)):
        if (suffix := ".".join(labels[index:])) in domains:
            return suffix
    return None


def is_shortener(host):
    return within(host, SHORTENERS) is not None


def _networks_text(networks):
    return ", ".join(network_label(network) for network in networks)


class LinkCheck(Check):
    """Refuse links to denied domains, outside an allow list, or hidden behind a shortener."""

    def run(self, subject, found):
        rules = [rule for _, rule in sorted(stored_rules(subject.networks).items())]
        findings = []
        for start, end, scheme in find_other_schemes(subject.text):
            findings.append(
                Finding(
                    code="link.scheme",
                    category=Category.LINK,
                    severity=Severity.WARN,
                    message=f"Unusual link type “{scheme}:”: reviewers and readers cannot see "
                    "where it leads.",
                    fix="Use an https:// link to a page of ours, or remove it.",
                    start=start,
                    end=end,
                    data={"scheme": scheme},
                )
            )
        if not rules:
            return findings
        lists = [
            (r, set(domain_list(r.denied_domains)), set(domain_list(r.allowed_domains)))
            for r in rules
        ]
        listed = set(SHORTENERS).union(*(d | a for _, d, a in lists))
        tlds = frozenset(domain.rsplit(".", 1)[-1] for domain in listed)
        urls = find_urls(subject.text, tlds=tlds)
        targets = [(url.url, url.start, url.end, {}) for url in urls]
        if subject.link.strip():
            targets.append((subject.link.strip(), None, None, {"field": "link"}))
        for url, start, end, data in targets:
            host = host_of(url)
            if not host:
                continue
            for code, networks, detail in self._problems(host, lists):
                findings.append(self._finding(code, url, host, networks, detail, start, end, data))
        return findings

    def _problems(self, host, lists):
        """(code, networks, detail) for each rule the host breaks, networks grouped."""
        problems = {}
        for rule, denied_domains, allowed in lists:
            if denied := within(host, denied_domains):
                problems.setdefault(("link.denied", denied), []).append(rule.network)
                continue
            if allowed and not within(host, allowed):
                problems.setdefault(("link.not_allowed", ""), []).append(rule.network)
                continue
            if rule.refuse_shorteners and is_shortener(host):
                problems.setdefault(("link.shortener", ""), []).append(rule.network)
        return [(code, networks, detail) for (code, detail), networks in problems.items()]

    def _finding(self, code, url, host, networks, detail, start, end, data):
        on = _networks_text(networks)
        where = "The attached link" if data.get("field") == "link" else "This link"
        message, fix = {
            "link.denied": (
                f"{where} goes to {host}, a domain refused on {on} ({detail} is on the deny list).",
                "Remove the link or link to an authorised page.",
            ),
            "link.not_allowed": (
                f"{where} goes to {host}, which is not on the list of domains allowed on {on}.",
                "Link to one of the allowed domains, or ask compliance to add this one.",
            ),
            "link.shortener": (
                f"{where} uses the URL shortener {host}: reviewers must see where a link goes "
                f"(refused on {on}).",
                "Link to the final address.",
            ),
        }[code]
        return Finding(
            code=code,
            category=Category.LINK,
            severity=Severity.BLOCK,
            message=message,
            fix=fix,
            start=start,
            end=end,
            network=networks[0] if len(networks) == 1 else "",
            data={**data, "url": url, "host": host, "networks": networks},
        )


__all__ = ["SHORTENERS", "LinkCheck", "domain_key", "domain_list", "host_of", "within"]
