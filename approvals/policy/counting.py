"""How each network counts a post's characters, and where the URLs, hashtags and mentions are.

- X (a rule with `weighted`): twitter-text v3, as X documents it. The text is NFC-normalized;
  code points in U+0000–U+10FF, U+2000–U+200D, U+2010–U+201F and U+2032–U+2037 weigh 1,
  every other code point 2; an emoji sequence (skin tones, ZWJ sequences, flags, keycaps)
  weighs 2 however many code points it takes; every URL, with or without its scheme, weighs
  `url_length` (23, the t.co link that replaces it).
- Mastodon: what its server counts, grapheme clusters; every http(s) URL weighs `url_length`
  and a remote mention counts as `@user`, without its domain.
- Any other network: code points, an http(s) URL weighing `url_length` when the rule sets one.

The attached link is counted as the network shows it: appended to the text after a space.
"""

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# --- URLs -----------------------------------------------------------------------------------------

# Top-level domains recognised without a scheme (X links "example.com" as it links
# "https://example.com"; shorteners are mostly written that way).
TLDS = (
    "com net org info biz edu gov int mil io co ai app dev me tv ws cc to ly gl gd at in is it fr "
    "eu uk de be ch lu ca us es pt nl se no dk fi ie pl cz ru cn jp kr br mx au nz za sg hk tw li "
    "mc ma tn sn ci re news blog shop online site store tech xyz finance bank money fund capital "
    "invest insurance immo paris link club top live page pro"
).split()
_URL_CHARS = r"[^\s<>\"«»“”]"
SCHEME_URL_RE = re.compile(rf"(?<![\w.+-])https?://{_URL_CHARS}+", re.IGNORECASE)


@lru_cache(maxsize=64)
def bare_url_re(tlds=frozenset()):
    """Domains written without a scheme, ending in a known top-level domain or one of `tlds`."""
    tld = "|".join(re.escape(t) for t in sorted(set(TLDS) | tlds, key=len, reverse=True))
    return re.compile(
        rf"(?<![\w@./:#＠-])(?:www\.)?(?:[^\W_](?:[\w-]{{0,61}}[^\W_])?\.)+(?:{tld})(?![\w-])"
        rf"(?::\d{{1,5}})?(?:[/?#]{_URL_CHARS}*)?",
        re.IGNORECASE,
    )


# Schemes a reviewer should hear about: anything://, and the script and data schemes.
OTHER_SCHEME_RE = re.compile(
    rf"(?<![\w.+-])(?:(?!https?://)[a-z][a-z0-9+.-]*://{_URL_CHARS}+"
    rf"|(?:javascript|vbscript):{_URL_CHARS}+|data:[\w.+-]+/[\w.+-]+[;,]{_URL_CHARS}*"
    rf"|mailto:{_URL_CHARS}+@{_URL_CHARS}+)",
    re.IGNORECASE,
)
_TRAILING = ".,;:!?'\"’»)]}…"


def _trim(text, start, end):
    """Drop the punctuation that ends a sentence rather than the URL (keeps balanced brackets)."""
    while end > start and text[end - 1] in _TRAILING:
        char = text[end - 1]
        pair = {")": "(", "]": "[", "}": "{"}.get(char)
        if pair and text.count(pair, start, end) >= text.count(char, start, end):
            break
        end -= 1
    return end


@dataclass(frozen=True)
class Url:
    start: int
    end: int
    url: str
    scheme: str  # "http", "https", or "" when written without one


def find_urls(text, *, bare=True, tlds=frozenset()):
    """The http(s) URLs of a text, and (with `bare`) the domains written without a scheme,
    ending in a common top-level domain or one of `tlds`."""
    return list(_find_urls(text, bare, frozenset(tlds)))


@lru_cache(maxsize=16)  # the checks look for the URLs of the same text several times
def _find_urls(text, bare, tlds):
    urls, taken = [], []
    for match in SCHEME_URL_RE.finditer(text):
        end = _trim(text, match.start(), match.end())
        value = text[match.start() : end]
        if "://" in value and len(value.split("://", 1)[1]) > 0:
            urls.append(Url(match.start(), end, value, value.split(":", 1)[0].lower()))
            taken.append((match.start(), match.end()))
    for match in OTHER_SCHEME_RE.finditer(text):  # never read as a bare domain
        taken.append((match.start(), match.end()))
    if bare:
        for match in bare_url_re(tlds).finditer(text):
            if any(s < match.end() and match.start() < e for s, e in taken):
                continue
            end = _trim(text, match.start(), match.end())
            urls.append(Url(match.start(), end, text[match.start() : end], ""))
    return tuple(sorted(urls, key=lambda url: url.start))


def find_other_schemes(text):
    """(start, end, scheme) of the links in a scheme other than http(s): ftp://, javascript:…"""
    found = []
    for match in OTHER_SCHEME_RE.finditer(text):
        end = _trim(text, match.start(), match.end())
        found.append((match.start(), end, match.group().split(":", 1)[0].lower()))
    return found


# --- Hashtags and mentions ------------------------------------------------------------------------

HASHTAG_RE = re.compile(r"(?<![\w&#＃/])[#＃](?=\w*[^\W\d_])\w+")
MENTION_RE = re.compile(r"(?<![\w@＠/])[@＠]\w+(?:@[\w-]+(?:\.[\w-]+)+)?")


def _outside(matches, urls):
    return [
        (m.start(), m.end()) for m in matches if not any(u.start <= m.start() < u.end for u in urls)
    ]


def find_hashtags(text):
    return _outside(HASHTAG_RE.finditer(text), find_urls(text))


def find_mentions(text):
    return _outside(MENTION_RE.finditer(text), find_urls(text))


# --- Emoji ----------------------------------------------------------------------------------------

_KEYCAP = "[0-9#*]\ufe0f?\u20e3"
_FLAG = "[\U0001f1e6-\U0001f1ff]{2}"
_TEXT_STYLE = "[\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa]\ufe0f"
_PICTOGRAPH = (
    "[\u231a-\u23ff\u24c2\u25aa-\u25fe\u2600-\u27bf\u2934\u2935\u2b05-\u2b55\u3030\u303d"
    "\u3297\u3299\U0001f000-\U0001faff]"
)
_MODIFIERS = "[\ufe0f\u20e3\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]*"
_ELEMENT = f"(?:{_FLAG}|{_KEYCAP}|{_TEXT_STYLE}|{_PICTOGRAPH}){_MODIFIERS}"
EMOJI_RE = re.compile(f"{_ELEMENT}(?:\u200d{_ELEMENT})*")


# --- Weights --------------------------------------------------------------------------------------

# twitter-text v3 (config/v3.json): these ranges weigh 1, everything else 2.
X_LIGHT_RANGES = ((0x0000, 0x10FF), (0x2000, 0x200D), (0x2010, 0x201F), (0x2032, 0x2037))
X_URL_LENGTH = 23
_HEAVY_RE = re.compile("[^\u0000-\u10ff\u2000-\u200d\u2010-\u201f\u2032-\u2037]")
_MAYBE_MARK_RE = re.compile("[^\u0000-\u02ff]")  # combining marks and joiners are all above
_JOINERS = {"\u200c", "\u200d", "\ufe0e", "\ufe0f"}


def _x_weight(char):
    return 2 if _HEAVY_RE.match(char) else 1


def _extends_cluster(char):
    return (
        unicodedata.combining(char) > 0
        or char in _JOINERS
        or (unicodedata.category(char) in ("Mn", "Me", "Mc"))
    )


def _mode(rule):
    if rule is None:
        return "plain"
    if getattr(rule, "weighted", False):
        return "x"
    if getattr(rule, "network", "") == "mastodon":
        return "graphemes"
    return "plain"


def _url_length(rule, mode):
    length = getattr(rule, "url_length", None)
    return X_URL_LENGTH if length is None and mode == "x" else length


def _pieces(text, rule):
    """(start, end, weight) of the pieces that count as a whole (URLs, emoji, remote mentions)
    and (start, end, None) of the plain runs between them."""
    mode = _mode(rule)
    return _pieces_of(text, mode, _url_length(rule, mode))


@lru_cache(maxsize=32)  # the preview and the checks measure the same text for several networks
def _emoji_spans(text):
    return (
        tuple((m.start(), m.end()) for m in EMOJI_RE.finditer(text)) if not text.isascii() else ()
    )


@lru_cache(maxsize=32)
def _pieces_of(text, mode, url_length):
    special = []
    if url_length is not None:
        special += [(u.start, u.end, url_length) for u in find_urls(text, bare=mode == "x")]
    if mode == "graphemes":  # @user@instance counts as @user
        for match in MENTION_RE.finditer(text):
            user = match.group().split("@", 2)
            special.append((match.start(), match.end(), len(user[1]) + 1))
    if mode in ("x", "graphemes"):
        special += [(start, end, 2 if mode == "x" else 1) for start, end in _emoji_spans(text)]
    special.sort()
    pieces, position = [], 0
    for start, end, weight in special:
        if start < position:  # inside a URL already counted
            continue
        if start > position:
            pieces.append((position, start, None))
        pieces.append((start, end, weight))
        position = end
    if position < len(text):
        pieces.append((position, len(text), None))
    return tuple(pieces)


def _run_weight(run, mode):
    """The weight of a plain run of text."""
    if mode == "plain" or run.isascii():
        return len(run)
    if mode == "x":
        return len(run) + len(_HEAVY_RE.findall(run))
    marks = (m for m in _MAYBE_MARK_RE.finditer(run) if m.start() and _extends_cluster(m.group()))
    return len(run) - sum(1 for _ in marks)


def _char_weights(run, mode):
    """The weight of each character of a plain run."""
    for index, char in enumerate(run):
        if mode == "x":
            yield _x_weight(char)
        elif mode == "graphemes":
            yield 0 if index and _extends_cluster(char) else 1
        else:
            yield 1


def tokens(text, rule):
    """(start, end, weight) of the text's countable pieces, as the rule's network counts them:
    a URL, an emoji or a mention as a whole, any other character by itself."""
    mode = _mode(rule)
    for start, end, weight in _pieces(text, rule):
        if weight is not None:
            yield start, end, weight
            continue
        for offset, char_weight in enumerate(_char_weights(text[start:end], mode)):
            yield start + offset, start + offset + 1, char_weight


def _full(text, link):
    return f"{text} {link}" if link else text


def count(text, link, rule):
    """The post's length as the rule's network counts it (the link appended after a space)."""
    full = unicodedata.normalize("NFC", _full(text or "", (link or "").strip()))
    mode = _mode(rule)
    return sum(
        _run_weight(full[start:end], mode) if weight is None else weight
        for start, end, weight in _pieces(full, rule)
    )


def overflow_start(text, link, rule, limit):
    """Where the text goes over `limit`, as an index in the original text; None when it fits
    or when only the attached link goes over."""
    text, mode, total = text or "", _mode(rule), 0
    for start, end, weight in _pieces(text, rule):
        piece = _run_weight(text[start:end], mode) if weight is None else weight
        if total + piece <= limit:
            total += piece
            continue
        if weight is not None:
            return start
        for offset, char_weight in enumerate(_char_weights(text[start:end], mode)):
            total += char_weight
            if total > limit:
                return start + offset
    return None


LABELS = {"x": "X", "linkedin": "LinkedIn", "facebook": "Facebook", "mastodon": "Mastodon"}


def network_label(network):
    if network in LABELS:
        return LABELS[network]
    from approvals.connectors import get_connector

    try:
        return get_connector(network).label.split(" (")[0] or network
    except LookupError:
        return network


__all__ = [
    "Url",
    "count",
    "find_hashtags",
    "find_mentions",
    "find_other_schemes",
    "find_urls",
    "network_label",
    "overflow_start",
    "tokens",
]
