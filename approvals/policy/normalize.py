"""The normalized copy of a text that the lexicon is matched on, and the way back to the original.

`normalize(text)` returns a `Normalized` whose `text` is the *word stream*: the letters and digits
of the text, folded so that the usual ways of disguising a word all give the same characters,
with the separators between words removed. `origin[i]` is the index in the original text of
normalized character i, so a match [a, b) maps back to [origin[a], origin[b-1] + 1) (see
`Normalized.span`, which also takes in the accents written as separate combining marks).
`gaps[i]` says what stood between normalized characters i-1 and i:

  NONE  nothing, or only invisible characters: the same word ("gar\u200banti");
        also the separators of a word written letter by letter ("g.a.r.a.n.t.i", "g a r a n t i");
  SOFT  punctuation with no space ("gar-anti", "ga_ranti", "l'argent"): a word boundary, that a
        lexicon term may also run across;
  HARD  a space or line break: a word boundary that a term only crosses where it has one itself.

`gaps` has one more byte than `text`: `gaps[len(text)]` (the end) is HARD, as is `gaps[0]`.

What is folded, character by character (one cached translation table):
  - compatibility forms (NFKC): fullwidth, ligatures ("ﬁ"), mathematical letters ("𝐠𝐚𝐫𝐚𝐧𝐭𝐢"),
    circled and squared letters; case (casefold); accents and other diacritics (NFKD, marks
    dropped); "œ", "æ", "ø", "ł", "đ" and other letters with no decomposition;
  - invisible characters are dropped: zero-width space, (non-)joiners, word joiner, soft hyphen,
    byte order mark, direction marks and bidi controls, variation selectors, tag characters,
    Hangul fillers, the Braille blank;
  - look-alike letters of other scripts (Cyrillic, Greek, Armenian, Latin small capitals and
    IPA letters, negative circled and squared letters) become the Latin letter they
    imitate, by a table written for the purpose (`HOMOGLYPHS`);
and word by word:
  - digits and symbols standing for letters (0 o, 1 i, 3 e, 4 a, 5 s, 7 t, 8 b, 9 g, @ a, $ s,
    € e, and ! or | between letters) are read as letters only in a word that also has letters:
    "3 %", "2026" and "100 €" stay numbers;
  - plural and feminine forms: each word is reduced to a light stem ("garanties", "garantis",
    "garantie" -> "garanti"; "guaranteed", "guarantees" -> "guarant"; see `stem`); terms are
    reduced the same way, and a match ending with a stemmed word maps back to the whole word;
  - a letter written three times or more is written once ("garaaaanti");
  - "l" and "i" are one letter (skeleton): "1" stands for either, so both fold to "i".
"""

import re
import unicodedata
from dataclasses import dataclass
from itertools import chain, repeat, starmap

NONE, SOFT, HARD = 0, 1, 2

# --- character level ------------------------------------------------------------------------------

# Invisible characters that are not all of general category Cf (which is dropped as a whole).
_INVISIBLE = {
    "\u034f",  # combining grapheme joiner
    "\u115f",
    "\u1160",
    "\u3164",
    "\uffa0",  # Hangul fillers
    "\u2800",  # Braille pattern blank
    "\u180e",  # Mongolian vowel separator
    *map(chr, range(0xFE00, 0xFE10)),  # variation selectors
    *map(chr, range(0xE0100, 0xE01F0)),  # variation selectors supplement
}

# Letters of other scripts that look like a Latin letter, as a person or a font would show
# them. Case matters (Greek capital Eta looks like H, small eta like n), so this table is
# applied before case folding, and once more after it.
_HOMOGLYPH_PAIRS = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C",
    "Т": "T", "Х": "X", "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "Ӏ": "I", "Ԛ": "Q", "Ԝ": "W",
    "Һ": "H", "Ү": "Y", "Ԁ": "D", "Ѵ": "V", "Ԍ": "G", "Ꙅ": "S", "Ꙇ": "I",
    # Cyrillic small letters
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j",
    "ѕ": "s", "ԁ": "d", "ӏ": "l", "һ": "h", "ԛ": "q", "ԝ": "w", "ү": "y", "ѵ": "v", "ь": "b",
    "к": "k", "м": "m", "т": "t", "в": "b", "н": "h", "п": "n", "г": "r", "ԍ": "g", "ꙅ": "s",
    "ꙇ": "i", "ɡ": "g",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    # Greek small letters
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j", "ϵ": "e", "ς": "c",
    "σ": "o", "μ": "u",
    # Armenian
    "օ": "o", "ս": "u", "ո": "n", "հ": "h", "ց": "g", "զ": "q", "Օ": "O", "Ս": "U",
    # Latin letters with no decomposition, IPA letters and small capitals
    "ı": "i", "ȷ": "j", "ɑ": "a", "ɩ": "i", "ɪ": "i", "ʟ": "l", "ø": "o", "Ø": "O", "đ": "d",
    "Đ": "D", "ł": "l", "Ł": "L", "ħ": "h", "Ħ": "H", "ŧ": "t", "ƀ": "b", "ɨ": "i", "ɵ": "o",
    "œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE", "ß": "ss", "ẞ": "SS", "þ": "th", "ð": "d",
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ᴊ": "j", "ᴋ": "k",
    "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v",
    "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "×": "x",
}  # fmt: skip
for _n in range(26):  # negative circled and squared capitals: 🅖 🅶 (not flags' letters)
    for _base in (0x1F150, 0x1F170):
        _HOMOGLYPH_PAIRS[chr(_base + _n)] = chr(ord("a") + _n)
HOMOGLYPHS = str.maketrans(_HOMOGLYPH_PAIRS)


def _drop_marks(text):
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def fold_char(char):
    """What one character of the original text becomes in the normalized copy ('' if dropped)."""
    if char in _INVISIBLE or unicodedata.category(char) == "Cf":
        return ""
    if unicodedata.category(char) in ("Mn", "Me"):
        return ""
    text = _drop_marks(unicodedata.normalize("NFKC", char)).translate(HOMOGLYPHS)
    text = _drop_marks(text.casefold()).translate(HOMOGLYPHS)
    return "".join(c for c in text if c not in _INVISIBLE and unicodedata.category(c) != "Cf")


class _Table(dict):
    """str.translate table computing each character's folding once, on first sight."""

    def __missing__(self, codepoint):
        folded = fold_char(chr(codepoint))
        if len(folded) != 1:
            _IRREGULAR.add(chr(codepoint))
        self[codepoint] = folded
        return folded


_IRREGULAR: set[str] = set()  # characters that are dropped or become several characters
_TABLE = _Table()
for _cp in range(128):  # ASCII first, so the common case never takes the slow path
    _TABLE[_cp]  # noqa: B018


# --- word level -----------------------------------------------------------------------------------

# A token: a run of letters, digits and the symbols that stand for letters; "%" is a token of
# its own ("100 %" and "100%" are one word; "10%garanti" is two).
_TOKEN = r"(?:[^\W_]|[@$€])+|%"
_SPLIT = re.compile(f"({_TOKEN})")
_ZEROS = [bytes(n) for n in range(65)]
_WORDS: dict[str, str] = {}  # word -> stem
_LETTER = re.compile(r"[^\W\d_]")
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"}
    | {"@": "a", "$": "s", "€": "e"}
)
_SKELETON = str.maketrans({"l": "i"})
_RUN = re.compile(r"([a-z])\1\1+")  # a letter three times or more: "garaaaanti"
_NEWLINES = re.compile(r"[\n\r\v\f\x85\u2028\u2029]")


def _gap(sep, prev, token):
    """How `token` is separated from the previous token, `prev`, by `sep`."""
    if not sep:  # only "%" makes two tokens touch
        return NONE if token == "%" and prev[-1].isdigit() else SOFT
    spaced = sep == " " or any(c.isspace() or not c.isprintable() for c in sep)
    if token == "%" and prev[-1].isdigit() and sep.isspace() and not _NEWLINES.search(sep):
        return NONE  # "3 %"
    if (
        len(token) == 1
        and len(prev) == 1
        and len(sep) <= 3
        # spaced out, only letters ("g a r a n t i"); with dots or dashes, digits too
        and ((token.isalpha() and prev.isalpha()) or (not spaced and (token + prev).isalnum()))
        and not _NEWLINES.search(sep)
    ):
        return NONE
    return HARD if spaced else SOFT


# Plural and feminine forms: both the text's words and the terms' words are reduced to a light
# stem, the same way, so "garanti" finds "garantie", "garantis" and "garanties", and "guaranteed"
# finds "guarantee", "guarantees" and "guaranteeing". A stem is never shorter than three letters
# (a final "e" stays on four: "sûre" is not "sur"), is the word but for its last letters, and is
# never longer: its letters map back to the word's first ones, and a match ending with a word
# ends with the whole word.
_STEM_LAST = frozenset("sxeydg")
_NOT_STEMMED = frozenset(
    "sans plus tous nous vous leurs dans chez sous vers tres apres moins mais hors "
    "less this these those your yours ours very only many every more once since unless".split()
)


def stem(word):
    """The light stem of a normalized word (see above); words with digits are left alone."""
    if len(word) < 4 or word in _NOT_STEMMED or not word.isalpha():
        return word
    if word.endswith("eaux"):  # nouveaux -> nouveau
        word = word[:-1]
    elif word.endswith("aux") and len(word) >= 5:  # capitaux -> capital
        word = word[:-3] + "al"
    elif word.endswith("s") and not word.endswith("ss"):  # garanties -> garantie
        word = word[:-1]
    if len(word) < 5:
        pass
    elif word.endswith("euse"):  # avantageuse -> avantageux
        word = word[:-4] + "eux"
    elif word.endswith("ive"):  # exclusive -> exclusif
        word = word[:-3] + "if"
    elif word.endswith(("elle", "enne", "onne", "ette")):  # exceptionnelle -> exceptionnel
        word = word[:-2]
    elif word.endswith("ing") and len(word) >= 7:  # guaranteeing -> guarantee
        word = word[:-3]
    elif word.endswith("ed") and len(word) >= 6:  # guaranteed -> guarante
        word = word[:-2]
    while word.endswith("e") and len(word) > 4:  # garantie, assuree -> garanti, assur
        word = word[:-1]
    if word.endswith("y") and len(word) > 3:  # opportunity -> opportuniti (opportunities)
        word = word[:-1] + "i"
    return word


@dataclass(frozen=True, eq=False)
class Normalized:
    text: str  # the word stream (see the module's docstring)
    origin: list  # origin[i]: index in `source` of text[i]
    gaps: bytearray  # gaps[i]: NONE, SOFT or HARD between text[i-1] and text[i]; len(text) + 1
    source: str  # the original text
    ends: dict  # where in `source` a stemmed word ends, by its end in `text`

    def span(self, start, end):
        """The span of the original text that normalized [start, end) comes from: from the
        first character's origin to just after the last one's (to the end of the whole word
        when its ending was stemmed away), with the combining marks that follow (an accent
        written as a separate character belongs to its letter)."""
        if not 0 <= start < end <= len(self.text):
            raise ValueError(f"not a span of the normalized text: {start}, {end}")
        first = self.origin[start]
        last = self.ends.get(end) or self.origin[end - 1] + 1
        source = self.source
        while last < len(source) and unicodedata.category(source[last]) in ("Mn", "Me", "Mc"):
            last += 1
        return first, last

    def __len__(self):
        return len(self.text)


def _collapse(word, spans):
    """The word with each letter repeated three times or more written once, and the spans of
    the characters kept."""
    positions = list(chain.from_iterable(starmap(range, spans)))
    keep = [True] * len(word)
    for run in _RUN.finditer(word):
        keep[run.start() + 1 : run.end()] = [False] * (run.end() - run.start() - 1)
    kept = [(p, p + 1) for p, k in zip(positions, keep, strict=True) if k]
    return "".join(c for c, k in zip(word, keep, strict=True) if k), kept


_irregular_pattern = (0, None)


def _origin_mapped(text):
    """origin[i] in `text` of each character of text.translate(_TABLE), when some characters
    were dropped or expanded (a list built from ranges between them, at C speed)."""
    global _irregular_pattern
    size, pattern = _irregular_pattern
    if size != len(_IRREGULAR):
        chars = "".join(sorted(_IRREGULAR))
        pattern = re.compile(f"[{re.escape(chars)}]")
        _irregular_pattern = (len(chars), pattern)
    segments, last = [], 0
    for match in pattern.finditer(text):
        i = match.start()
        segments.append(range(last, i))
        segments.append(repeat(i, len(_TABLE[ord(text[i])])))
        last = i + 1
    segments.append(range(last, len(text)))
    return list(chain.from_iterable(segments))


def _bangs(mapped):
    """ "!" and "|" between two letters read as "i" (one for one: spans are unchanged)."""
    chars = None
    for symbol in "!|":
        i = mapped.find(symbol, 1)
        while 0 < i < len(mapped) - 1:
            if mapped[i - 1].isalpha() and mapped[i + 1].isalpha():
                chars = chars or list(mapped)
                chars[i] = "i"
            i = mapped.find(symbol, i + 1)
    return "".join(chars) if chars else mapped


def _word(word, cache=_WORDS):
    """The stem of a word of letters (cached: a text repeats its words)."""
    stemmed = cache.get(word)
    if stemmed is None:
        if len(cache) > 100_000:
            cache.clear()
        stemmed = cache[word] = stem(word) if word[-1] in _STEM_LAST else word
    return stemmed


def _slow(word, parts, kept, gaps, ends, length, runs, origin_mapped):
    """Write a word that is not just letters (digits, symbols, spelt letter by letter...)."""
    kind, tokens, spans = word
    word = tokens[0] if len(tokens) == 1 else "".join(tokens)
    end = spans[-1][1]
    if not word.isalpha() and _LETTER.search(word):
        word = word.translate(_LEET)
    if runs and _RUN.search(word):
        word, spans = _collapse(word, spans)
    stemmed = stem(word) if len(word) > 3 else word
    size = len(stemmed)
    if size == len(word):
        kept.extend(spans)
    else:
        remaining = size
        for a, b in spans:
            if b - a >= remaining:
                kept.append((a, a + remaining))
                break
            kept.append((a, b))
            remaining -= b - a
    length += size
    if kept[-1][1] != end:  # the word's end was stemmed or collapsed away
        ends[length] = end if origin_mapped is None else origin_mapped[end - 1] + 1
    gaps.append(kind)
    gaps.extend(bytes(size - 1))
    parts.append(stemmed)
    return length


def normalize(text) -> Normalized:
    """The normalized copy of `text` that lexicon terms are matched on (see the module)."""
    text = text or ""
    mapped = text.translate(_TABLE)
    if _IRREGULAR.isdisjoint(text):
        origin_mapped = None  # one character for one: the identity
    else:
        origin_mapped = _origin_mapped(text)
    if "!" in mapped or "|" in mapped:
        mapped = _bangs(mapped)

    # The text splits into separator, token, separator, token... separator; tokens joined by
    # NONE gaps make one word. A token of two letters or more is always a word of its own
    # (only single characters and "%" join their neighbours): the fast path, taken at once;
    # other words are gathered in `pending`, and written by `slow` when complete.
    pieces = _SPLIT.split(mapped)
    parts = []  # the stream's words: leet-read, collapsed and stemmed
    kept = []  # spans in `mapped` of the stream's characters
    gaps = bytearray()
    ends = {}
    runs = _RUN.search(mapped) is not None
    zeros = _ZEROS
    length = 0
    pending = None  # (gap, tokens, spans) of a word still open
    prev = None
    position = len(pieces[0])
    for i in range(1, len(pieces), 2):
        token, sep = pieces[i], pieces[i - 1]
        end = position + len(token)
        if len(token) > 1 and token.isalpha() and not (runs and _RUN.search(token)):
            if pending:
                length = _slow(pending, parts, kept, gaps, ends, length, runs, origin_mapped)
                pending = None
            gaps.append(HARD if prev is None or sep == " " else _gap(sep, prev, token))
            stemmed = _word(token) if len(token) > 3 else token
            size = len(stemmed)
            gaps += zeros[size - 1] if size <= 64 else bytes(size - 1)
            kept.append((position, position + size))
            length += size
            if size != len(token):
                ends[length] = end if origin_mapped is None else origin_mapped[end - 1] + 1
            parts.append(stemmed)
        else:
            kind = HARD if prev is None else _gap(sep, prev, token)
            if kind == NONE and pending:
                pending[1].append(token)
                pending[2].append((position, end))
            else:
                if pending:
                    length = _slow(pending, parts, kept, gaps, ends, length, runs, origin_mapped)
                pending = (kind, [token], [(position, end)])
        prev = token
        position = end + len(pieces[i + 1])
    if pending:
        length = _slow(pending, parts, kept, gaps, ends, length, runs, origin_mapped)
    gaps.append(HARD)
    stream = "".join(parts).translate(_SKELETON)

    positions = chain.from_iterable(starmap(range, kept))
    if origin_mapped is None:
        origin = list(positions)
    else:
        origin = list(map(origin_mapped.__getitem__, positions))
    return Normalized(text=stream, origin=origin, gaps=gaps, source=text, ends=ends)


__all__ = ["HARD", "NONE", "SOFT", "Normalized", "fold_char", "normalize", "stem"]
