"""The reviewer contract: what a reviewer sees (:class:`ReviewContext`) and answers.

A reviewer is one async method, ``review(context, content) -> Verdict``, so a third party
implements one without importing anything of ours but the two value types. The chain
(:mod:`agentguard.review._chain`) gives every reviewer the same guarantees: it runs under a
timeout, a reviewer that raises or times out blocks unless configured otherwise, and nothing
reviewed is written anywhere.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agentguard._model import Principal

__all__ = [
    "Direction",
    "Outcome",
    "ReviewContext",
    "Reviewer",
    "ReviewerFunction",
    "Verdict",
    "fingerprint",
]

_MAX_REASON = 120


class Direction(str, enum.Enum):
    """Which way the content flows, seen from the agent.

    ``IN`` is what the agent sends (its outgoing request, before the upstream or route sees
    it); ``OUT`` is what the agent will read (the response, before it reaches the model).
    """

    IN = "in"
    OUT = "out"


class Outcome(str, enum.Enum):
    """What a reviewer decided."""

    ALLOW = "allow"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class ReviewContext:
    """Everything a reviewer may know about the content besides the content itself.

    ``path`` is the audit-safe path (no query string); ``content_type`` is the lower-case
    media type without parameters (``application/json``), or ``""`` when none was sent.
    """

    direction: Direction
    method: str = "GET"
    path: str = "/"
    content_type: str = ""
    service: str | None = None
    principal: Principal | None = None
    request_id: str | None = None

    @property
    def is_json(self) -> bool:
        """Whether the body is JSON (``application/json`` or any ``+json`` type)."""
        return self.content_type == "application/json" or self.content_type.endswith("+json")

    @property
    def is_form(self) -> bool:
        """Whether the body is an URL-encoded form."""
        return self.content_type == "application/x-www-form-urlencoded"


def fingerprint(value: str) -> str:
    """A short, non-reversible handle for a redacted value: 8 hex chars of its SHA-256."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A reviewer's answer: allow, redact (with the new content) or block; always with a reason.

    ``reason`` is a short machine-readable code (``credential_in_body``,
    ``prompt_injection``) that goes into audit events and error bodies, so it must never quote
    the content. ``redacted`` holds :func:`fingerprint` values of what was removed, never the
    values themselves.
    """

    outcome: Outcome
    reason: str
    reviewer: str
    replacement: str | None = None
    redacted: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.reason or len(self.reason) > _MAX_REASON or not self.reason.isprintable():
            raise ValueError(f"a verdict reason is 1-{_MAX_REASON} printable characters")
        if (self.outcome is Outcome.REDACT) != (self.replacement is not None):
            raise ValueError("a redact verdict, and only a redact verdict, carries a replacement")

    @classmethod
    def allow(cls, reviewer: str, reason: str = "clean") -> Verdict:
        """Nothing to do."""
        return cls(Outcome.ALLOW, reason, reviewer)

    @classmethod
    def block(cls, reviewer: str, reason: str) -> Verdict:
        """Refuse the whole request or response."""
        return cls(Outcome.BLOCK, reason, reviewer)

    @classmethod
    def redact(
        cls, reviewer: str, reason: str, replacement: str, redacted: tuple[str, ...] = ()
    ) -> Verdict:
        """Let the content through as ``replacement``; ``redacted`` are fingerprints."""
        return cls(Outcome.REDACT, reason, reviewer, replacement, tuple(redacted))

    @property
    def allowed(self) -> bool:
        """Whether the content may pass unchanged."""
        return self.outcome is Outcome.ALLOW


@runtime_checkable
class Reviewer(Protocol):
    """Reviews one body (request or response) and answers with a :class:`Verdict`.

    Guarantees an implementation gives:

    - ``review`` never writes the content anywhere (disk, logs, metrics labels) and never
      puts it into the verdict's ``reason``.
    - It is safe to call concurrently for different requests (keep per-request state local).
    - It may raise; the chain turns an exception or a timeout into a block unless this
      reviewer was added with ``on_error="allow"``.

    Optional attributes the chain honours:

    - ``name: str`` shown in verdicts and audit events (defaults to the class name).
    - ``streaming: bool`` and ``overlap: int``: the reviewer can judge a streamed body one
      window at a time, provided each window repeats the last ``overlap`` characters of the
      previous one (the longest match it looks for, minus one).
    """

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        """Judge ``content`` (the decoded body) in ``context``."""
        ...


ReviewerFunction = Callable[[ReviewContext, str], "Verdict | Awaitable[Verdict]"]
"""A plain function (sync or async) that the chain accepts in place of a :class:`Reviewer`."""
