"""InjectionScreen: prompt injection in what the model reads, script injection in what it writes.

Rules are regular expressions over the *normalised* text (:mod:`agentguard.review.normalise`:
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

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from agentguard.review.base import Direction, ReviewContext, Verdict, fingerprint
from agentguard.review.normalise import (
    normalise,
    rewrite_fields,
    text_fields,
    unescape_json_text,
)

__all__ = ["DEFAULT_RULES", "NOTICE", "InjectionRule", "InjectionScreen"]

_BOTH = frozenset({Direction.IN, Direction.OUT})
_OUT = frozenset({Direction.OUT})
_IN = frozenset({Direction.IN})
NOTICE = "[removed by agentguard: suspected injection]"


@dataclass(frozen=True)
class InjectionRule:
    """One signal: ``pattern`` (a regular expression) found means ``weight`` points.

    ``raw`` rules match the original text (hidden characters included) instead of the
    normalised one, and are skipped for pure-ASCII text. Patterns are compiled with
    ``re.MULTILINE``. ``anchors``, when given, are lower-case literals of which at least one
    must occur in the normalised text for the pattern to be tried (a speed-up only: a rule
    whose anchors are wrong misses matches).
    """

    id: str
    pattern: str
    weight: int
    directions: frozenset[Direction] = _OUT
    raw: bool = False
    description: str = ""
    anchors: tuple[str, ...] = ()
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", re.compile(self.pattern, re.MULTILINE))


_SCRIPT = r"(?:j\s*a\s*v\s*a|v\s*b)\s*s\s*c\s*r\s*i\s*p\s*t\s*"
_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|original|initial|system|developer)"
_ORDERS = r"(?:instructions?|prompts?|rules|directions|guidelines|directives|guardrails)"

DEFAULT_RULES: tuple[InjectionRule, ...] = (
    InjectionRule(
        "ignore_instructions",
        rf"\b(?:ignore|disregard|forget|override|bypass)\b[\w ,'-]{{0,30}}?\b{_PREVIOUS}\s+"
        rf"(?:[\w-]+\s+){{0,2}}?{_ORDERS}",
        8,
        _BOTH,
        description="tells the reader to drop the instructions it was given",
        anchors=("ignore", "disregard", "forget", "override", "bypass"),
    ),
    InjectionRule(
        "all_previous_instructions",
        rf"\b(?:all|any|every)\s+(?:of\s+)?(?:the\s+|your\s+|my\s+)?{_PREVIOUS}\s+{_ORDERS}",
        4,
        _BOTH,
        description="the blanket form of the above",
        anchors=(
            "instruction",
            "prompt",
            "rule",
            "direction",
            "guideline",
            "directive",
            "guardrail",
        ),
    ),
    InjectionRule(
        "new_instructions",
        r"\b(?:new|updated|real|actual|revised)\s+(?:system\s+)?instructions?\s*:"
        r"|\bfrom\s+now\s+on,?\s+(?:you|the\s+assistant)\b|\byour\s+new\s+(?:task|goal|role)\b",
        6,
        description="introduces replacement instructions",
        anchors=("instruction", "from now on", "your new"),
    ),
    InjectionRule(
        "role_override",
        r"\byou\s+are\s+now\s+(?:a|an|the|in|my|no\s+longer)\b|\bdeveloper\s+mode\b"
        r"|\bjailbr(?:eak|oken)\b|\bdo\s+anything\s+now\b|\bpretend\s+(?:to\s+be|you\s+are)\b"
        r"|\bact\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|uncensored)\b",
        6,
        description="tries to change who the model is",
        anchors=("you are now", "developer mode", "jailbr", "anything now", "pretend", "act as"),
    ),
    InjectionRule(
        "chat_template_tokens",
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?inst\]|<</?sys>>"
        r"|</?(?:system|system_prompt)>|^\s*#{2,}\s*(?:system|instruction)s?\s*:",
        10,
        description="chat-template markers that spoof a system or assistant turn",
        anchors=("<|", "inst]", "<<", "system", "instruction"),
    ),
    InjectionRule(
        "role_prefix",
        r"^\s*(?:system|assistant|developer)\s*(?:message|prompt)?\s*:\s*\S",
        3,
        description="a line that poses as a system or assistant message",
        anchors=("system", "assistant", "developer"),
    ),
    InjectionRule(
        "prompt_extraction",
        r"\b(?:reveal|print|show|repeat|output|leak|dump|tell\s+me)\s+(?:me\s+)?(?:your|the)\s+"
        r"(?:full\s+|entire\s+|hidden\s+|secret\s+)?(?:system|initial|hidden|original)\s+"
        r"(?:prompt|instructions|message)",
        6,
        _BOTH,
        description="asks for the system prompt",
        anchors=("prompt", "instruction", "message"),
    ),
    InjectionRule(
        "secrecy",
        r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|mention\s+(?:this\s+)?to|alert|notify)\s+"
        r"(?:this\s+to\s+)?the\s+user\b|\bwithout\s+(?:telling|informing|asking|notifying)\s+"
        r"the\s+user\b",
        5,
        description="asks the model to hide what it does from its user",
        anchors=("the user",),
    ),
    InjectionRule(
        "exfiltration",
        r"\b(?:send|email|post|forward|upload|exfiltrate|transmit|paste)\s+(?:all\s+|the\s+|your\s+|"
        r"any\s+)*(?:api\s+keys?|credentials|passwords|access\s+tokens|secrets|system\s+prompt|"
        r"conversation\s+history|chat\s+history)\b",
        5,
        _BOTH,
        description="asks for secrets or the conversation to be sent somewhere",
        anchors=("key", "credential", "password", "token", "secret", "prompt", "history"),
    ),
    InjectionRule(
        "addressed_to_ai",
        r"\b(?:note|message|instructions?)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?"
        r"(?:ai|llm|assistant|language\s+model|agent|chatbot)s?\b"
        r"|\b(?:ai|llm)\s+(?:assistant|agent|model)s?\s*:",
        5,
        description="text addressed to the model rather than the human reader",
        anchors=("ai", "llm", "assistant", "model", "agent", "chatbot"),
    ),
    InjectionRule(
        "html_comment_instruction",
        r"<!--(?:(?!-->).){0,400}?\b(?:instructions?|ignore|assistant|ai|llm|prompt|model)\b"
        r"(?:(?!-->).){0,400}?-->",
        6,
        description="instructions hidden in an HTML comment",
        anchors=("<!--",),
    ),
    InjectionRule(
        "css_hidden_text",
        r"(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px|pt|em)?\s*[;\"']"
        r"|opacity\s*:\s*0(?:\.0+)?\s*[;\"']|color\s*:\s*(?:white|#fff(?:fff)?)\s*[;\"'])",
        4,
        description="text styled to be invisible to a human",
        anchors=("display", "visibility", "font-size", "opacity", "color"),
    ),
    InjectionRule(
        "zero_width_smuggling",
        r"[a-zA-Z][\u200b\u200c\u2060\ufeff\u00ad]+[a-zA-Z]|[\u200b-\u200f\u2060-\u2064\ufeff]{3,}",
        4,
        _BOTH,
        raw=True,
        description="zero-width characters inside words or in runs",
    ),
    InjectionRule(
        "tag_characters",
        "[\U000e0020-\U000e007e]{8,}",  # flag emoji use up to 5
        10,
        _BOTH,
        raw=True,
        description="invisible Unicode tag characters carrying ASCII",
    ),
    InjectionRule(
        "bidi_override",
        "[\u202a-\u202e\u2066-\u2069]",
        3,
        _BOTH,
        raw=True,
        description="bidirectional overrides that reorder what a human sees",
    ),
    InjectionRule(
        "script_tag",
        r"<\s*/?\s*script\b",
        10,
        _IN,
        description="a <script> element",
        anchors=("script",),
    ),
    InjectionRule(
        "event_handler",
        r"<[a-z][^<>]{0,500}?[\s/\"']on[a-z]{3,20}\s*=",
        10,
        _IN,
        description="an HTML event-handler attribute (onerror=, onload=, ...)",
        anchors=("on",),
    ),
    InjectionRule(
        "script_url",
        rf"[=(]\s*[\"'`]?\s*{_SCRIPT}:|^\s*{_SCRIPT}:(?!\s)",
        10,
        _IN,
        description="a javascript: or vbscript: URL",
    ),
    InjectionRule(
        "data_html_url",
        r"\bdata\s*:\s*(?:text/html|application/xhtml\+xml|image/svg\+xml)",
        10,
        _IN,
        description="a data: URL that renders active content",
        anchors=("data",),
    ),
    InjectionRule(
        "active_element",
        r"<\s*(?:iframe|object|embed|frameset|base|meta\s+http-equiv)\b",
        6,
        _IN,
        description="elements that load or run other content",
        anchors=("iframe", "object", "embed", "frameset", "base", "meta"),
    ),
)


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
        self.threshold = threshold
        self.action = action
        self.name = name

    def __repr__(self) -> str:
        return f"InjectionScreen(rules={len(self.rules)}, threshold={self.threshold})"

    def matches(self, direction: Direction, text: str) -> list[InjectionRule]:
        """The rules for ``direction`` that match ``text`` (one unstructured piece)."""
        folded = normalise(text)
        ascii_only = text.isascii()
        hits = []
        for rule in self.rules:
            if direction not in rule.directions or (rule.raw and ascii_only):
                continue
            if rule.anchors and not any(anchor in folded for anchor in rule.anchors):
                continue
            if rule.compiled.search(text if rule.raw else folded):
                hits.append(rule)
        return hits

    def score(self, context: ReviewContext, content: str) -> tuple[int, list[str]]:
        """The score of ``content`` and the ids of the rules that matched."""
        hits = self.matches(context.direction, "\n".join(self._pieces(context, content)))
        return sum(rule.weight for rule in hits), [rule.id for rule in hits]

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        """Block or redact ``content`` when its score reaches the threshold."""
        score, ids = self.score(context, content)
        if score < self.threshold:
            return Verdict.allow(self.name)
        reason = "injection:" + "+".join(ids)
        if len(reason) > 120:
            reason = reason[:117] + "..."
        if self.action == "block":
            return Verdict.block(self.name, reason)
        marks: list[str] = []
        editor = _FieldEditor(self, context.direction, marks)
        replacement = rewrite_fields(context.content_type, content, editor)
        if replacement is None:
            replacement = self._redact_lines(context.direction, content, marks)
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

    def _redact_lines(self, direction: Direction, content: str, marks: list[str]) -> str:
        lines = content.splitlines(keepends=True)
        out = []
        for line in lines:
            if self.matches(direction, line):
                marks.append(fingerprint(line))
                out.append(NOTICE + ("\n" if line.endswith(("\n", "\r")) else ""))
            else:
                out.append(line)
        return "".join(out)


class _FieldEditor:
    def __init__(self, screen: InjectionScreen, direction: Direction, marks: list[str]) -> None:
        self.screen = screen
        self.direction = direction
        self.marks = marks

    def __call__(self, value: str) -> str:
        if not self.screen.matches(self.direction, value):
            return value
        self.marks.append(fingerprint(value))
        return NOTICE
