"""The ``re`` patterns the built-in reviewers used before RE2: the oracle for the differential
tests in ``test_linear_equivalence.py``. Frozen copies; never imported by the library."""

# ruff: noqa: E501 - frozen copies of long patterns, kept exactly as they were
from __future__ import annotations

# The injection rules, by id (compiled with re.MULTILINE).
INJECTION: dict[str, str] = {
    "ignore_instructions": "\\b(?:ignore|disregard|forget|override|bypass)\\b[\\w ,'-]{0,30}?\\b(?:previous|prior|above|earlier|preceding|original|initial|system|developer)\\s+(?:[\\w-]+\\s+){0,2}?(?:instructions?|prompts?|rules|directions|guidelines|directives|guardrails)",
    "all_previous_instructions": "\\b(?:all|any|every)\\s+(?:of\\s+)?(?:the\\s+|your\\s+|my\\s+)?(?:previous|prior|above|earlier|preceding|original|initial|system|developer)\\s+(?:instructions?|prompts?|rules|directions|guidelines|directives|guardrails)",
    "new_instructions": "\\b(?:new|updated|real|actual|revised)\\s+(?:system\\s+)?instructions?\\s*:|\\bfrom\\s+now\\s+on,?\\s+(?:you|the\\s+assistant)\\b|\\byour\\s+new\\s+(?:task|goal|role)\\b",
    "role_override": "\\byou\\s+are\\s+now\\s+(?:a|an|the|in|my|no\\s+longer)\\b|\\bdeveloper\\s+mode\\b|\\bjailbr(?:eak|oken)\\b|\\bdo\\s+anything\\s+now\\b|\\bpretend\\s+(?:to\\s+be|you\\s+are)\\b|\\bact\\s+as\\s+(?:an?\\s+)?(?:unrestricted|unfiltered|uncensored)\\b",
    "chat_template_tokens": "<\\|(?:im_start|im_end|system|user|assistant|endoftext)\\|>|\\[/?inst\\]|<</?sys>>|</?(?:system|system_prompt)>|^\\s*#{2,}\\s*(?:system|instruction)s?\\s*:",
    "role_prefix": "^\\s*(?:system|assistant|developer)\\s*(?:message|prompt)?\\s*:\\s*\\S",
    "prompt_extraction": "\\b(?:reveal|print|show|repeat|output|leak|dump|tell\\s+me)\\s+(?:me\\s+)?(?:your|the)\\s+(?:full\\s+|entire\\s+|hidden\\s+|secret\\s+)?(?:system|initial|hidden|original)\\s+(?:prompt|instructions|message)",
    "secrecy": "\\b(?:do\\s+not|don't|never)\\s+(?:tell|inform|mention\\s+(?:this\\s+)?to|alert|notify)\\s+(?:this\\s+to\\s+)?the\\s+user\\b|\\bwithout\\s+(?:telling|informing|asking|notifying)\\s+the\\s+user\\b",
    "exfiltration": "\\b(?:send|email|post|forward|upload|exfiltrate|transmit|paste)\\s+(?:all\\s+|the\\s+|your\\s+|any\\s+)*(?:api\\s+keys?|credentials|passwords|access\\s+tokens|secrets|system\\s+prompt|conversation\\s+history|chat\\s+history)\\b",
    "addressed_to_ai": "\\b(?:note|message|instructions?)\\s+(?:to|for)\\s+(?:the\\s+|any\\s+|all\\s+)?(?:ai|llm|assistant|language\\s+model|agent|chatbot)s?\\b|\\b(?:ai|llm)\\s+(?:assistant|agent|model)s?\\s*:",
    "html_comment_instruction": "<!--(?:(?!-->).){0,400}?\\b(?:instructions?|ignore|assistant|ai|llm|prompt|model)\\b(?:(?!-->).){0,400}?-->",
    "css_hidden_text": "(?:display\\s*:\\s*none|visibility\\s*:\\s*hidden|font-size\\s*:\\s*0(?:px|pt|em)?\\s*[;\\\"']|opacity\\s*:\\s*0(?:\\.0+)?\\s*[;\\\"']|color\\s*:\\s*(?:white|#fff(?:fff)?)\\s*[;\\\"'])",
    "zero_width_smuggling": "[a-zA-Z][\\u200b\\u200c\\u2060\\ufeff\\u00ad]+[a-zA-Z]|[\\u200b-\\u200f\\u2060-\\u2064\\ufeff]{3,}",
    "tag_characters": "[\U000e0020-\U000e007e]{8,}",
    "bidi_override": "[\u202a-\u202e\u2066-\u2069]",
    "script_tag": "<\\s*/?\\s*script\\b",
    "event_handler": "<[a-z][^<>]{0,500}?[\\s/\\\"']on[a-z]{3,20}\\s*=",
    "script_url": "[=(]\\s*[\\\"'`]?\\s*(?:j\\s*a\\s*v\\s*a|v\\s*b)\\s*s\\s*c\\s*r\\s*i\\s*p\\s*t\\s*:|^\\s*(?:j\\s*a\\s*v\\s*a|v\\s*b)\\s*s\\s*c\\s*r\\s*i\\s*p\\s*t\\s*:(?!\\s)",
    "data_html_url": "\\bdata\\s*:\\s*(?:text/html|application/xhtml\\+xml|image/svg\\+xml)",
    "active_element": "<\\s*(?:iframe|object|embed|frameset|base|meta\\s+http-equiv)\\b",
}

_B = r"(?<![0-9A-Za-z_])"
_E = r"(?![0-9A-Za-z])"

# The credential shapes, by name.
SHAPES: dict[str, str] = {
    "agentguard_key": _B + r"ag_[ar]t_[0-9A-Za-z]{49}" + _E,
    "github_token": _B + r"gh[pousr]_[0-9A-Za-z]{36}" + _E,
    "github_pat": _B + r"github_pat_[0-9A-Za-z]{22}_[0-9A-Za-z]{59}" + _E,
    "aws_access_key": r"(?<![0-9A-Z])(?:AKIA|ASIA)[0-9A-Z]{16}" + _E,
    "google_api_key": r"(?<![0-9A-Za-z_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])",
    "stripe_live_key": _B + r"[sr]k_live_[0-9A-Za-z]{24,99}" + _E,
    "private_key": (
        r"-----BEGIN (?P<pem_label>(?:[A-Z0-9]+ )*)PRIVATE KEY-----"
        r"(?:[A-Za-z0-9+/=\s\\:,.-]{0,16384}?-----END (?P=pem_label)PRIVATE KEY-----)?"
    ),
    "jwt": r"(?<![0-9A-Za-z_-])eyJ[0-9A-Za-z_-]{6,}\.eyJ[0-9A-Za-z_-]{6,}\.[0-9A-Za-z_-]{16,}",
}

JSON_ESCAPE = r"\\u([0-9a-fA-F]{4})"
