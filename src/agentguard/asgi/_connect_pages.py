"""The HTML pages of the connect flow: small, static, no script, every value escaped.

Each page is rendered whole from fixed text and a few values (the service's name, the user's
id and name, a ticket in a hidden field); every interpolated value goes through
:func:`html.escape`. The one style block is allowed by its hash in the Content-Security-Policy,
so nothing else can run or load.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from agentguard.errors import PayloadTooLarge, RequestRefused, ServiceUnavailable

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "PAGE_HEADERS",
    "Answer",
    "confirm_page",
    "message_page",
    "page",
    "refusal_page",
    "user_label",
    "vendor_error_page",
    "with_headers",
]

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "color:#1a1a1a;line-height:1.5}"
    "h1{font-size:1.4rem}"
    "button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem;cursor:pointer}"
    ".muted{color:#555;font-size:.9rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode("ascii")

CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; frame-ancestors 'none'"
)
"""No script, no external load, no framing. No ``form-action``: browsers apply it to the
redirect that follows the form (to the vendor), whose origin the page cannot know in advance."""

PAGE_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    ("pragma", "no-cache"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("content-security-policy", CONTENT_SECURITY_POLICY),
)
"""On every answer; an answer's own header of the same name replaces the default."""


@dataclass(frozen=True)
class Answer:
    """A response to send: status, body, and headers besides :data:`PAGE_HEADERS`."""

    status: int
    body: bytes
    headers: Sequence[tuple[str, str]] = ()

    def all_headers(self) -> list[tuple[str, str]]:
        """:data:`PAGE_HEADERS` (less those this answer sets itself), then its own."""
        own = {name for name, _ in self.headers}
        return [*(h for h in PAGE_HEADERS if h[0] not in own), *self.headers]


def _document(title: str, content: str) -> bytes:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{content}</main></body></html>\n"
    ).encode()


def user_label(user_id: str, name: str = "") -> str:
    """How a page names an agentguard user: the id, and the directory's name when it has one
    (printable characters only, at most 80)."""
    shown = " ".join("".join(ch if ch.isprintable() else " " for ch in name).split())[:80]
    return f"{user_id} ({shown})" if shown and shown != user_id else user_id


def confirm_page(
    service: str, action: str, ticket: str | None, user_id: str, user_name: str = ""
) -> bytes:
    """The confirmation page: connect or disconnect ``service``'s account for ``user_id``.

    ``action`` is the form's target (the same page, without the query); ``ticket`` rides in a
    hidden field so that only the POST, never the GET a mail scanner makes, uses it. The page
    names the agentguard user the connection is for, and says plainly that whoever continues
    connects *their own* vendor account to that user: a link forwarded to someone else must
    not quietly hand their account to the link's user.
    """
    hidden = (
        f'<input type="hidden" name="ticket" value="{escape(ticket)}">'
        if ticket is not None
        else ""
    )
    name = escape(service)
    who = escape(user_id)
    what = "This link" if ticket is not None else "This page"
    content = (
        f"<h1>Connect your {name} account</h1>"
        f'<p id="user">{what} connects a {name} account to agentguard user '
        f"<strong>{escape(user_label(user_id, user_name))}</strong>. "
        f"<strong>Continue only if you are {who}</strong>: whoever continues connects their own "
        f"{name} account to {who}, and {who}'s agents will act with it.</p>"
        f"<p><strong>Connect</strong> takes you to {name} to sign in and approve access; "
        f"<strong>Disconnect</strong> removes the {name} account connected to {who} before.</p>"
        f'<form method="post" action="{escape(action)}">{hidden}'
        '<button type="submit" name="action" value="connect" id="connect">Connect</button>'
        '<button type="submit" name="action" value="disconnect" id="disconnect">'
        "Disconnect</button></form>"
        '<p class="muted">If you did not expect this page, close it: nothing happens until you '
        "choose.</p>"
    )
    return _document(f"Connect your {service} account", content)


def message_page(title: str, message: str, hint: str | None = None) -> bytes:
    """A page that says what happened (success or refusal) and, if useful, what to do next."""
    extra = f'<p class="muted">{escape(hint)}</p>' if hint is not None else ""
    content = f"<h1>{escape(title)}</h1><p>{escape(message)}</p>{extra}"
    return _document(title, content)


def page(status: int, title: str, message: str, hint: str | None = None) -> Answer:
    """A :func:`message_page` answer."""
    return Answer(status, message_page(title, message, hint))


def with_headers(answer: Answer, headers: Sequence[tuple[str, str]]) -> Answer:
    """``answer`` with ``headers`` added."""
    return Answer(answer.status, answer.body, [*answer.headers, *headers])


_TITLES = {
    400: "This request is not valid",
    403: "The connection was refused",
    405: "Method not allowed",
    408: "This request took too long",
    413: "This request is too large",
}


def refusal_page(error: RequestRefused) -> Answer:
    """A refusal as a page: its status and headers (``Allow``, ``Retry-After``), its words."""
    if isinstance(error, ServiceUnavailable):  # which part is down is no business of the page
        shown = page(
            503,
            "Temporarily unavailable",
            "The server could not complete this right now.",
            "try again in a moment",
        )
    elif isinstance(error, PayloadTooLarge):
        shown = page(413, _TITLES[413], "the form is larger than this page ever sends")
    else:
        title = _TITLES.get(error.status, "This request could not be completed")
        shown = page(error.status, title, error.description)
    return with_headers(shown, error.response_headers())


def vendor_error_page(service: str, code: str) -> Answer:
    """The vendor sent the browser back with ``error=code`` (already checked to be a code)."""
    if code == "access_denied":
        return page(
            403,
            "Not connected",
            f"{service} did not authorize the connection (access was denied there).",
            "to connect after all, open the connect link again",
        )
    if code in ("server_error", "temporarily_unavailable"):
        return page(
            502,
            "Not connected",
            f"{service} could not authorize the connection right now.",
            "try again in a few minutes",
        )
    return page(
        400,
        "Not connected",
        f"{service} refused the authorization request ({code}).",
        "tell your operator: the connection may be misconfigured",
    )
