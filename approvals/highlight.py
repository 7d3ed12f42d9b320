"""Post text with the spans of the automated checks' findings marked, safe to show as HTML.

The text is cut at every span boundary; each piece is escaped and its links made clickable on
its own (Django's urlize, which escapes what it does not link), marked pieces are wrapped in
<mark class="finding-SEVERITY" title="messages">; line breaks become <br> in each piece. Nothing of
the original text reaches the page unescaped, so templates may show the result as it is. With
no span to mark, the result is exactly `text|urlize|linebreaksbr`, what the pages showed before.
"""

import re
from dataclasses import dataclass

from django.template.defaultfilters import linebreaksbr, urlize
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from approvals.models.policy import Category, Severity

SEVERITY_RANK = {Severity.BLOCK: 0, Severity.WARN: 1, Severity.INFO: 2}
# What separates words for urlize (django.utils.html.Urlizer.word_split_re).
_SEPARATOR = re.compile(r"""[\s<>"']""")


def _spans(text, findings):
    """(start, end, finding) for the findings with a usable span, clamped to the text."""
    size = len(text)
    spans = []
    for finding in findings:
        if finding.start is None or finding.end is None:
            continue
        start, end = max(0, min(finding.start, size)), max(0, min(finding.end, size))
        if end > start:
            spans.append((start, end, finding))
    return spans


def _inside_word(text, at):
    """Whether a cut at `at` falls inside a word (a run urlize would read as one link)."""
    return 0 < at < len(text) and not (_SEPARATOR.match(text[at - 1]) or _SEPARATOR.match(text[at]))


def _piece(text, start, end):
    """One piece of the text, escaped; its whole words urlized, the cut ones escaped only (half
    a URL must not become a link to somewhere else)."""
    piece = text[start:end]
    head, body, tail = "", piece, ""
    if _inside_word(text, start):
        first = _SEPARATOR.search(body)
        head, body = (body[: first.start()], body[first.start() :]) if first else (body, "")
    if body and _inside_word(text, end):
        ends = [match.end() for match in _SEPARATOR.finditer(body)]
        body, tail = (body[: ends[-1]], body[ends[-1] :]) if ends else ("", body)
    html = mark_safe(escape(head) + urlize(body, autoescape=True) + escape(tail))
    return linebreaksbr(html, autoescape=True)


def highlight(text, findings) -> SafeString:
    """The text as HTML with every finding's span in a <mark>; overlapping spans are cut into
    pieces, each marked with the most severe finding covering it and titled with the messages of
    all of them, most severe first."""
    text = text or ""
    spans = _spans(text, findings)
    cuts = sorted({0, len(text), *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    pieces = []
    for start, end in zip(cuts, cuts[1:], strict=False):
        html = _piece(text, start, end)
        covering = sorted(
            (f for s, e, f in spans if s <= start and end <= e),
            key=lambda f: SEVERITY_RANK.get(f.severity, 9),
        )
        if covering:
            severity = covering[0].severity
            title = " · ".join(dict.fromkeys(" ".join(f.message.split()) for f in covering))
            html = format_html(
                '<mark class="finding-{}" title="{}">{}</mark>', severity, title, html
            )
        pieces.append(html)
    return mark_safe("".join(pieces))


@dataclass(frozen=True)
class FindingRow:
    """What the findings list shows of one finding (a policy Finding or a RevisionFinding)."""

    code: str
    category: str
    category_label: str
    severity: str
    severity_label: str
    message: str
    fix: str
    network: str
    excerpt: str
    insert: str


def _label(choices, value):
    try:
        return choices(value).label
    except ValueError:
        return value


def rows(text, findings):
    """The findings as the list shows them, most severe first, then in text order."""
    text = text or ""
    result = []
    for finding in findings:
        data = getattr(finding, "data", None) or {}
        insert = data.get("insert") if isinstance(data, dict) else None
        has_span = finding.start is not None and finding.end is not None
        result.append(
            FindingRow(
                code=finding.code,
                category=finding.category,
                category_label=_label(Category, finding.category),
                severity=finding.severity,
                severity_label=_label(Severity, finding.severity),
                message=finding.message,
                fix=finding.fix or "",
                network=finding.network or "",
                excerpt=text[finding.start : finding.end] if has_span else "",
                insert=insert if isinstance(insert, str) else "",
            )
        )
    return sorted(result, key=lambda row: SEVERITY_RANK.get(row.severity, 9))


def checks_context(text, findings, *, frozen, editor=False):
    """The context of templates/approvals/partials/findings.html: the findings listed, those
    that block submission, the text highlighted when a finding concerns part of it, whether the
    findings were frozen with a revision, and whether an editor can insert mentions."""
    listed = rows(text, findings)
    return {
        "findings": listed,
        "blocking": [row for row in listed if row.severity == Severity.BLOCK],
        "highlighted": highlight(text, findings) if _spans(text, findings) else "",
        "frozen": frozen,
        "editor": editor,
    }
