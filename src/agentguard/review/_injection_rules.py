"""The injection rule type and the default rule set, as data (RE2 patterns, weights, anchors).

Patterns are RE2 (:mod:`agentguard.review._linear`), so matching is linear-time; Python's
``\\w``, ``\\s`` and ``\\b`` are spelled out because RE2's are ASCII-only. Each default rule
keeps the meaning of its former ``re`` pattern (a differential test checks it), except
``html_comment_instruction``, which no longer bounds the comment text to 400 characters on
each side of the keyword.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentguard.review._base import Direction
from agentguard.review._linear import SPACE, WORD, WORD_END, WORD_START, LinearPattern

__all__ = ["DEFAULT_RULES", "InjectionRule"]

_BOTH = frozenset({Direction.IN, Direction.OUT})
_OUT = frozenset({Direction.OUT})
_IN = frozenset({Direction.IN})


@dataclass(frozen=True)
class InjectionRule:
    """One signal: ``pattern`` (an RE2 regular expression) found means ``weight`` points.

    Patterns are RE2 syntax (:mod:`agentguard.review._linear`), compiled in multi-line mode,
    so matching is linear-time whatever the text; a pattern RE2 rejects (a lookaround, a
    backreference) raises :class:`~agentguard.review._linear.PatternError` here. ``raw`` rules
    match the original text (hidden characters included) instead of the normalised one, and
    are skipped for pure-ASCII text. ``anchors``, when given, are lower-case literals of which
    at least one must occur in the normalised text for the pattern to be tried (a speed-up
    only: a rule whose anchors are wrong misses matches).
    """

    id: str
    pattern: str
    weight: int
    directions: frozenset[Direction] = _OUT
    raw: bool = False
    description: str = ""
    anchors: tuple[str, ...] = ()
    compiled: LinearPattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "compiled", LinearPattern(self.pattern, multiline=True))


# Python's \s, \S, \w and \b, spelled for RE2 (see agentguard.review._linear).
_S = f"[{SPACE}]"
_NS = f"[^{SPACE}]"
_B = WORD_START
_E = WORD_END
_SCRIPT = rf"(?:j{_S}*a{_S}*v{_S}*a|v{_S}*b){_S}*s{_S}*c{_S}*r{_S}*i{_S}*p{_S}*t{_S}*"
_PREVIOUS = r"(?:previous|prior|above|earlier|preceding|original|initial|system|developer)"
_ORDERS = r"(?:instructions?|prompts?|rules|directions|guidelines|directives|guardrails)"
# An HTML comment's text up to a keyword and from it to "-->": no newline and no "-->" inside
# (the units below are the strings without "-->"), a non-word character next to the keyword.
_UNIT = r"(?:[^\n-]|-[^\n-]|-{2,}[^\n>-])"
_NON_WORD = rf"[^{WORD}\n-]"
_BEFORE = rf"(?:{_UNIT}*(?:-+|{_NON_WORD}|-[^{WORD}\n-]|-{{2,}}[^{WORD}\n>-]))?"
_AFTER = rf"(?:(?:{_NON_WORD}|-[^\n-]|-{{2,}}[^\n>-]){_UNIT}*)?-*"

DEFAULT_RULES: tuple[InjectionRule, ...] = (
    InjectionRule(
        "ignore_instructions",
        rf"{_B}(?:ignore|disregard|forget|override|bypass)[ ,'-](?:[{WORD} ,'-]{{0,28}}[ ,'-])?"
        rf"{_PREVIOUS}{_S}+(?:[{WORD}-]+{_S}+){{0,2}}{_ORDERS}",
        8,
        _BOTH,
        description="tells the reader to drop the instructions it was given",
        anchors=("ignore", "disregard", "forget", "override", "bypass"),
    ),
    InjectionRule(
        "all_previous_instructions",
        rf"{_B}(?:all|any|every){_S}+(?:of{_S}+)?(?:the{_S}+|your{_S}+|my{_S}+)?{_PREVIOUS}{_S}+"
        rf"{_ORDERS}",
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
        rf"{_B}(?:new|updated|real|actual|revised){_S}+(?:system{_S}+)?instructions?{_S}*:"
        rf"|{_B}from{_S}+now{_S}+on,?{_S}+(?:you|the{_S}+assistant){_E}"
        rf"|{_B}your{_S}+new{_S}+(?:task|goal|role){_E}",
        6,
        description="introduces replacement instructions",
        anchors=("instruction", "from now on", "your new"),
    ),
    InjectionRule(
        "role_override",
        rf"{_B}you{_S}+are{_S}+now{_S}+(?:a|an|the|in|my|no{_S}+longer){_E}"
        rf"|{_B}developer{_S}+mode{_E}|{_B}jailbr(?:eak|oken){_E}|{_B}do{_S}+anything{_S}+now{_E}"
        rf"|{_B}pretend{_S}+(?:to{_S}+be|you{_S}+are){_E}"
        rf"|{_B}act{_S}+as{_S}+(?:an?{_S}+)?(?:unrestricted|unfiltered|uncensored){_E}",
        6,
        description="tries to change who the model is",
        anchors=("you are now", "developer mode", "jailbr", "anything now", "pretend", "act as"),
    ),
    InjectionRule(
        "chat_template_tokens",
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext)\|>|\[/?inst\]|<</?sys>>"
        rf"|</?(?:system|system_prompt)>|^{_S}*#{{2,}}{_S}*(?:system|instruction)s?{_S}*:",
        10,
        description="chat-template markers that spoof a system or assistant turn",
        anchors=("<|", "inst]", "<<", "system", "instruction"),
    ),
    InjectionRule(
        "role_prefix",
        rf"^{_S}*(?:system|assistant|developer){_S}*(?:message|prompt)?{_S}*:{_S}*{_NS}",
        3,
        description="a line that poses as a system or assistant message",
        anchors=("system", "assistant", "developer"),
    ),
    InjectionRule(
        "prompt_extraction",
        rf"{_B}(?:reveal|print|show|repeat|output|leak|dump|tell{_S}+me){_S}+(?:me{_S}+)?"
        rf"(?:your|the){_S}+(?:full{_S}+|entire{_S}+|hidden{_S}+|secret{_S}+)?"
        rf"(?:system|initial|hidden|original){_S}+(?:prompt|instructions|message)",
        6,
        _BOTH,
        description="asks for the system prompt",
        anchors=("prompt", "instruction", "message"),
    ),
    InjectionRule(
        "secrecy",
        rf"{_B}(?:do{_S}+not|don't|never){_S}+"
        rf"(?:tell|inform|mention{_S}+(?:this{_S}+)?to|alert|notify){_S}+"
        rf"(?:this{_S}+to{_S}+)?the{_S}+user{_E}"
        rf"|{_B}without{_S}+(?:telling|informing|asking|notifying){_S}+the{_S}+user{_E}",
        5,
        description="asks the model to hide what it does from its user",
        anchors=("the user",),
    ),
    InjectionRule(
        "exfiltration",
        rf"{_B}(?:send|email|post|forward|upload|exfiltrate|transmit|paste){_S}+"
        rf"(?:all{_S}+|the{_S}+|your{_S}+|any{_S}+)*"
        rf"(?:api{_S}+keys?|credentials|passwords|access{_S}+tokens|secrets|system{_S}+prompt|"
        rf"conversation{_S}+history|chat{_S}+history){_E}",
        5,
        _BOTH,
        description="asks for secrets or the conversation to be sent somewhere",
        anchors=("key", "credential", "password", "token", "secret", "prompt", "history"),
    ),
    InjectionRule(
        "addressed_to_ai",
        rf"{_B}(?:note|message|instructions?){_S}+(?:to|for){_S}+(?:the{_S}+|any{_S}+|all{_S}+)?"
        rf"(?:ai|llm|assistant|language{_S}+model|agent|chatbot)s?{_E}"
        rf"|{_B}(?:ai|llm){_S}+(?:assistant|agent|model)s?{_S}*:",
        5,
        description="text addressed to the model rather than the human reader",
        anchors=("ai", "llm", "assistant", "model", "agent", "chatbot"),
    ),
    InjectionRule(
        "html_comment_instruction",
        rf"<!--{_BEFORE}(?:instructions?|ignore|assistant|ai|llm|prompt|model){_AFTER}-->",
        6,
        description="instructions hidden in an HTML comment (one line, up to the first -->)",
        anchors=("<!--",),
    ),
    InjectionRule(
        "css_hidden_text",
        rf"(?:display{_S}*:{_S}*none|visibility{_S}*:{_S}*hidden"
        rf"|font-size{_S}*:{_S}*0(?:px|pt|em)?{_S}*[;\"']"
        rf"|opacity{_S}*:{_S}*0(?:\.0+)?{_S}*[;\"']"
        rf"|color{_S}*:{_S}*(?:white|#fff(?:fff)?){_S}*[;\"'])",
        4,
        description="text styled to be invisible to a human",
        anchors=("display", "visibility", "font-size", "opacity", "color"),
    ),
    InjectionRule(
        "zero_width_smuggling",
        r"[a-zA-Z][\x{200b}\x{200c}\x{2060}\x{feff}\x{ad}]+[a-zA-Z]"
        r"|[\x{200b}-\x{200f}\x{2060}-\x{2064}\x{feff}]{3,}",
        4,
        _BOTH,
        raw=True,
        description="zero-width characters inside words or in runs",
    ),
    InjectionRule(
        "tag_characters",
        r"[\x{e0020}-\x{e007e}]{8,}",  # flag emoji use up to 5
        10,
        _BOTH,
        raw=True,
        description="invisible Unicode tag characters carrying ASCII",
    ),
    InjectionRule(
        "bidi_override",
        r"[\x{202a}-\x{202e}\x{2066}-\x{2069}]",
        3,
        _BOTH,
        raw=True,
        description="bidirectional overrides that reorder what a human sees",
    ),
    InjectionRule(
        "script_tag",
        rf"<{_S}*/?{_S}*script{_E}",
        10,
        _IN,
        description="a <script> element",
        anchors=("script",),
    ),
    InjectionRule(
        "event_handler",
        rf"<[a-z][^<>]{{0,500}}[{SPACE}/\"']on[a-z]{{3,20}}{_S}*=",
        10,
        _IN,
        description="an HTML event-handler attribute (onerror=, onload=, ...)",
        anchors=("on",),
    ),
    InjectionRule(
        "script_url",
        rf"[=(]{_S}*[\"'`]?{_S}*{_SCRIPT}:|^{_S}*{_SCRIPT}:(?:{_NS}|\z)",
        10,
        _IN,
        description="a javascript: or vbscript: URL",
    ),
    InjectionRule(
        "data_html_url",
        rf"{_B}data{_S}*:{_S}*(?:text/html|application/xhtml\+xml|image/svg\+xml)",
        10,
        _IN,
        description="a data: URL that renders active content",
        anchors=("data",),
    ),
    InjectionRule(
        "active_element",
        rf"<{_S}*(?:iframe|object|embed|frameset|base|meta{_S}+http-equiv){_E}",
        6,
        _IN,
        description="elements that load or run other content",
        anchors=("iframe", "object", "embed", "frameset", "base", "meta"),
    ),
)
