"""The one HTML sanitizer configuration, for HTML that enters from outside.

Post text is never HTML (see approvals.text and the `post_text` filter); this allow-list is for
markup that arrives from networks (comments, replies) or is rendered from Markdown. nh3 (Rust's
ammonia) replaces bleach, whose maintainers ended all releases, security fixes included, in 2026.
"""

import nh3

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "em", "i", "li", "ol", "p", "pre", "strong",
    "ul",
}  # fmt: skip
# Never svg, math, noscript, style, iframe, nor a style attribute.
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "abbr": {"title"}}
URL_SCHEMES = {"http", "https", "mailto"}


def clean_html(html):
    """Return `html` reduced to the allow-list; safe to mark safe in a template."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )
