"""SecretLeakReviewer: no real credential, in any common encoding, passes a review.

Exact matches come first: the reviewer holds every credential value the vault knows (loaded
once from :meth:`SecretSource.values`, kept current through :meth:`SecretSource.on_change`)
and looks for each one in every form :func:`encoded_forms` lists (raw; base64 and base64url at
each of the three alignments inside a larger blob, padded or not; hex; URL-encoded;
JSON-escaped; the first and last :func:`~agentguard._secret.fragment_length` characters of a
value of 16 or more), in the text and in its views: JSON escapes, percent-encoding and
interleaved NULs (UTF-16/32 read as UTF-8) and whitespace (wrapped, indented base64) undone.
It is the same matcher the proxy's echo scanner uses: every form of every value in one
Aho-Corasick pass per view, linear in the body whatever it holds. The work is done in steps of
at most 64 KiB (building a view, matching a slice of one) with
:func:`~agentguard.review.checkpoint` between them, so other requests are served while a
large body is reviewed and the step's deadline fires (fail closed) mid-review. In JSON and
form bodies the decoded fields are also joined, so a credential cut across two adjacent fields
is found. Then credential *shapes* that carry a checksum or a fixed
form (:mod:`agentguard.review._shapes`).

Redaction replaces the forms that appear in the text as they are; a credential visible only
in a view (every character ``\\u``-escaped, percent-encoded) has no span to replace, so it
blocks.

Values shorter than ``min_length`` (default 8) are not indexed, nor forms shorter than it: they
would match ordinary text. Values stay in the index after the vault replaces them: an old
credential leaking is still a leak.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, Protocol, runtime_checkable

from agentguard._secret import FRAGMENT, Secret, encoded_forms
from agentguard._secret_match import SecretMatcher
from agentguard.review._base import ReviewContext, Verdict, fingerprint
from agentguard.review._budget import checkpoint
from agentguard.review._normalise import text_fields
from agentguard.review._shapes import (
    SHAPE_OVERLAP,
    SHAPES,
    compile_shapes,
    find_shapes_stepwise,
    redact_shapes,
)

__all__ = ["FRAGMENT", "SecretLeakReviewer", "SecretSource", "encoded_forms"]

Action = Literal["block", "redact"]
_CREDENTIAL = "[redacted:credential]"


@runtime_checkable
class SecretSource(Protocol):
    """Where the reviewer learns credential values; :class:`~agentguard.CredentialVault` is one.

    ``on_change`` must call the listener with every value stored from then on, and
    ``values`` must return every value stored so far.
    """

    def on_change(self, listener: Callable[[str], None]) -> None:
        """Register ``listener(plaintext)``."""
        ...

    async def values(self) -> list[Secret]:
        """Every stored credential value."""
        ...


class SecretLeakReviewer:
    """Blocks (or redacts) real credentials and credential shapes in a body.

    Args:
        vault: a :class:`SecretSource` (the credential vault) to index; loaded on first use.
        secrets: further exact values to match (minted tokens, admin keys held elsewhere).
        action: ``"block"`` (default) or ``"redact"``. A credential split across two fields
            and a private key whose footer is not visible always block: there is no single
            span to replace.
        shapes: the credential shapes to detect (default :data:`~agentguard.review.SHAPES`;
            ``{}`` for exact values only).
        min_length: shortest value indexed.
        name: the name in verdicts and audit events.
    """

    streaming = True

    def __init__(
        self,
        vault: SecretSource | None = None,
        *,
        secrets: Iterable[str | Secret] = (),
        action: Action = "block",
        shapes: dict[str, tuple[str, Callable[[str], bool]]] | None = None,
        min_length: int = 8,
        name: str = "secret_leak",
    ) -> None:
        if action not in ("block", "redact"):
            raise ValueError("action is 'block' or 'redact'")
        self.name = name
        self.action: Action = action
        self.min_length = min_length
        self.shapes = SHAPES if shapes is None else dict(shapes)
        self._shape_pattern = compile_shapes(self.shapes)
        self._vault = vault
        self._loaded = vault is None
        self._matcher = SecretMatcher(min_length=min_length)
        self._values: dict[str, str] = {}  # raw value -> fingerprint
        for secret in secrets:
            self.add(secret)
        if vault is not None:
            vault.on_change(self.add)

    def __repr__(self) -> str:
        return f"SecretLeakReviewer(values={len(self._values)}, action={self.action!r})"

    @property
    def overlap(self) -> int:
        """Characters a streamed window must repeat: the most one match of a form can cover
        in any view (a fully escaped form), or a long shape."""
        return max(self._matcher.span, SHAPE_OVERLAP if self.shapes else 0)

    def holdback(self, content: str) -> int:
        """Characters at the end of ``content`` that could begin a credential form the next
        window completes: often far fewer than :attr:`overlap` (see
        :meth:`agentguard._secret_match.SecretMatcher.holdback`). Shapes are not counted."""
        return self._matcher.holdback(content)

    def add(self, secret: str | Secret) -> None:
        """Index one credential value (the vault calls this for each value it stores)."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if len(value) < self.min_length or value in self._values:
            return
        self._matcher.add(value)
        self._values[value] = fingerprint(value)

    async def load(self) -> None:
        """Index every value the vault holds now (done automatically on first review)."""
        if self._vault is not None:
            for secret in await self._vault.values():
                self.add(secret)
        self._loaded = True

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        """Block or redact credentials in ``content``."""
        if not self._loaded:
            await self.load()
        marks: list[str] = []
        text = content
        if await self._matcher.find_stepwise(content, checkpoint) is not None:
            if self.action == "block":
                return Verdict.block(self.name, "credential_in_body")
            found = await self._matcher.forms_in_stepwise(content, checkpoint)  # longest first
            marks.extend(sorted({self._values[self._matcher.forms[form]] for form in found}))
            for form in found:
                text = text.replace(form, _CREDENTIAL)
            await checkpoint()
            # Only in a view: no span to replace.
            if await self._matcher.find_stepwise(text, checkpoint) is not None:
                return Verdict.block(self.name, "credential_in_body")
        elif await self._split_across_fields(context, content):
            return Verdict.block(self.name, "credential_split_across_fields")
        shapes = await find_shapes_stepwise(text, self.shapes, self._shape_pattern)
        for shape in reversed(shapes):
            if self.action == "block" or not shape.complete:
                return Verdict.block(self.name, f"{shape.shape}_in_body")
        if shapes:
            text = redact_shapes(text, shapes, marks)
        if not marks:
            return Verdict.allow(self.name)
        return Verdict.redact(self.name, "credential_redacted", text, tuple(marks))

    async def _split_across_fields(self, context: ReviewContext, content: str) -> bool:
        if not self._values:
            return False
        values = text_fields(context.content_type, content, keys=False)
        await checkpoint()
        if values is None or len(values) < 2:
            return False
        return await self._matcher.find_stepwise("".join(values), checkpoint) is not None
