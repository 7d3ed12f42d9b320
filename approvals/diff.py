import difflib
import re

# A word with the spaces after it, so a changed phrase reads as one change, not word by word.
_TOKENS = re.compile(r"\s+|\S+\s*")


def word_diff(old, new):
    """[(op, text)] with op in 'equal', 'insert', 'delete'; text is plain (templates escape it)."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    chunks = []
    for op, a1, a2, b1, b2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            chunks.append(("equal", "".join(a[a1:a2])))
            continue
        if op in ("delete", "replace"):
            chunks.append(("delete", "".join(a[a1:a2])))
        if op in ("insert", "replace"):
            chunks.append(("insert", "".join(b[b1:b2])))
    return chunks
