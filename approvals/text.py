"""Post text is plain text: stored as typed, normalized, and escaped on the way out."""

import re
import unicodedata

# C0/C1 controls except tab and newline, plus the bidi overrides and isolates that can make
# text display differently from what a reviewer reads ("Trojan Source"). ZWJ stays: emoji use it.
_UNWANTED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff\ufff9-\ufffb]")


def clean_text(value):
    """NFC-normalize, unify line ends, drop control characters; nothing else is touched."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = unicodedata.normalize("NFC", value)
    return _UNWANTED.sub("", value)
