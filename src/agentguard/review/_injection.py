"""InjectionScreen: prompt injection in what the model reads, script injection in what it writes.

Rules are regular expressions over the *normalised* text (:mod:`agentguard.review._normalise`:
NFKC, hidden characters removed or decoded, homoglyphs folded, lower case), except ``raw``
rules, which look at the original characters (to see the hidden ones). JSON and form bodies
are scanned field by field (decoded, so ``\\u003cscript`` is ``<script``).

Each rule has an id, a weight and the directions it applies to. A body's score is the sum of
the weights of the distinct rules that match; at or above ``threshold`` (default 10) the
screen blocks, or with ``action="redact"`` replaces each matching field (or, in unstructured
text, each matching line) with a notice. One strong rule reaches the threshold on its own;
weaker signals (hidden text, a role marker) need company. The rule set is data: pass
``rules=DEFAULT_RULES + (InjectionRule(...),)`` or a filtered tuple to tune it.

A rule must not match more than ``overlap`` characters (default 512) for streamed bodies,
which are scored window by window.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from agentguard.review._base import Direction, ReviewContext, Verdict, fingerprint
from agentguard.review._budget import STEP_CHARS, checkpoint
from agentguard.review._injection_rules import DEFAULT_RULES, InjectionRule
from agentguard.review._linear import LiteralSet, Subject
from agentguard.review._normalise import (
    normalise,
    normalise_stepwise,
    rewrite_fields,
    text_fields,
    unescape_json_text,
)

__all__ = ["DEFAULT_RULES", "NOTICE", "InjectionRule", "InjectionScreen"]

NOTICE = "[removed by agentguard: suspected injection]"


class InjectionScreen:
    """Scores a body against injection rules and blocks or redacts at the threshold.

    Args:
        rules: the rule set (default :data:`DEFAULT_RULES`).
        threshold: the score at which the screen acts.
        action: ``"block"`` (default) or ``"redact"``.
        name: the name in verdicts and audit events.
    """

    streaming = True
    overlap = 512

    def __init__(
        self,
        rules: Iterable[InjectionRule] = DEFAULT_RULES,
        *,
        threshold: int = 10,
        action: Literal["block", "redact"] = "block",
        name: str = "injection_screen",
    ) -> None:
        if threshold <= 0:
            raise ValueError("the threshold is positive")
        if action not in ("block", "redact"):
            raise ValueError("action is 'block' or 'redact'")
        self.rules = tuple(rules)
        self._anchors = _Anchors(self.rules)
        self.threshold = threshold
        self.action = action
        self.name = name

    def __repr__(self) -> str:
        return f"InjectionScreen(rules={len(self.rules)}, threshold={self.threshold})"

    def _candidates(self, direction: Direction, text: str, folded: Subject) -> list[InjectionRule]:
        ascii_only = text.isascii()
        if self._anchors.rules is not self.rules:  # the rule set was replaced after __init__
            self._anchors = _Anchors(self.rules)
        present = self._anchors.literals.present(folded)
        return [
            rule
            for rule in self.rules
            if direction in rule.directions
            and not (rule.raw and ascii_only)
            and (not rule.anchors or not present.isdisjoint(rule.anchors))
        ]

    def matches(self, direction: Direction, text: str) -> list[InjectionRule]:
        """The rules for ``direction`` that match ``text`` (one unstructured piece)."""
        subjects = _Subjects(text, normalise(text))
        return [
            rule
            for rule in self._candidates(direction, text, subjects.folded)
            if rule.compiled.search(subjects.get(rule)) is not None
        ]

    async def matches_stepwise(self, direction: Direction, text: str) -> list[InjectionRule]:
        """:meth:`matches`, one linear-time pass per step with a
        :func:`~agentguard.review.checkpoint` between steps (normalising, then each
        rule's search), so other requests run and the reviewer's deadline can fire."""
        subjects = _Subjects(text, await normalise_stepwise(text, STEP_CHARS))
        await checkpoint()
        hits = []
        for rule in self._candidates(direction, text, subjects.folded):
            if rule.compiled.search(subjects.get(rule)) is not None:
                hits.append(rule)
            await checkpoint()
        return hits

    def score(self, context: ReviewContext, content: str) -> tuple[int, list[str]]:
        """The score of ``content`` and the ids of the rules that matched."""
        hits = self.matches(context.direction, "\n".join(self._pieces(context, content)))
        return sum(rule.weight for rule in hits), [rule.id for rule in hits]

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        """Block or redact ``content`` when its score reaches the threshold."""
        pieces = self._pieces(context, content)
        await checkpoint()
        hits = await self.matches_stepwise(context.direction, "\n".join(pieces))
        score, ids = sum(rule.weight for rule in hits), [rule.id for rule in hits]
        if score < self.threshold:
            return Verdict.allow(self.name)
        reason = "injection:" + "+".join(ids)
        if len(reason) > 120:
            reason = reason[:117] + "..."
        if self.action == "block":
            return Verdict.block(self.name, reason)
        marks: list[str] = []
        fields = text_fields(context.content_type, content)
        flagged = set() if fields is None else await self._flagged(context.direction, fields)
        replacement = rewrite_fields(context.content_type, content, _FieldEditor(flagged, marks))
        if replacement is None:
            replacement = await self._redact_lines(context.direction, content, marks)
        if not marks:  # the rules matched only across fields or lines: nothing smaller to cut
            return Verdict.block(self.name, reason)
        return Verdict.redact(self.name, reason, replacement, tuple(marks))

    def _pieces(self, context: ReviewContext, content: str) -> list[str]:
        fields = text_fields(context.content_type, content)
        if fields is not None:
            return fields
        if context.is_json:
            return [unescape_json_text(content)]
        return [content]

    async def _flagged(self, direction: Direction, pieces: Iterable[str]) -> set[str]:
        """The distinct pieces that match a rule, with a checkpoint every ``STEP_CHARS``."""
        flagged: set[str] = set()
        seen: set[str] = set()
        work = 0
        for piece in pieces:
            if piece in seen:
                continue
            seen.add(piece)
            if len(piece) > STEP_CHARS:
                hits = await self.matches_stepwise(direction, piece)
            else:
                hits = self.matches(direction, piece)
            if hits:
                flagged.add(piece)
            work += len(piece) + 64
            if work >= STEP_CHARS:
                work = 0
                await checkpoint()
        return flagged

    async def _redact_lines(self, direction: Direction, content: str, marks: list[str]) -> str:
        lines = content.splitlines(keepends=True)
        flagged = await self._flagged(direction, lines)
        out = []
        for line in lines:
            if line in flagged:
                marks.append(fingerprint(line))
                out.append(NOTICE + ("\n" if line.endswith(("\n", "\r")) else ""))
            else:
                out.append(line)
        return "".join(out)


class _Anchors:
    """Every anchor of a rule set, found in one pass over the text."""

    def __init__(self, rules: tuple[InjectionRule, ...]) -> None:
        self.rules = rules
        self.literals = LiteralSet([anchor for rule in rules for anchor in rule.anchors])


class _Subjects:
    """The raw and the normalised text, each encoded once for all the rules."""

    def __init__(self, text: str, folded: str) -> None:
        self.text = text
        self.folded = Subject(folded)
        self._raw: Subject | None = None

    def get(self, rule: InjectionRule) -> Subject:
        if not rule.raw:
            return self.folded
        if self._raw is None:
            self._raw = Subject(self.text)
        return self._raw


class _FieldEditor:
    def __init__(self, flagged: set[str], marks: list[str]) -> None:
        self.flagged = flagged
        self.marks = marks

    def __call__(self, value: str) -> str:
        if value not in self.flagged:
            return value
        self.marks.append(fingerprint(value))
        return NOTICE
