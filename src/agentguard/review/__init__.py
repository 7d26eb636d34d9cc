"""Reviewers: screening what the agent sends and what it reads, below the model.

The prompt already failed, so the content itself is checked: a :class:`ReviewChain` of
reviewers runs on the agent's outgoing request (before the upstream or the route sees it) and on
the response (before the model reads it). Built-ins: :class:`SecretLeakReviewer` (real
credentials and checksummed credential shapes), :class:`InjectionScreen` (prompt and script
injection, a tunable scored rule set) and :class:`ModelReviewer` (your own model's opinion).
"""

from agentguard.review._base import (
    Direction,
    Outcome,
    ReviewContext,
    Reviewer,
    ReviewerFunction,
    Verdict,
    fingerprint,
)
from agentguard.review._budget import ReviewDeadlineExceeded, checkpoint
from agentguard.review._chain import ReviewChain, ReviewerLike, ReviewStep
from agentguard.review._errors import RequestBlocked, ResponseBlocked, ReviewBlocked
from agentguard.review._injection import DEFAULT_RULES, InjectionRule, InjectionScreen
from agentguard.review._linear import LinearPattern, PatternError
from agentguard.review._model import ModelReviewer
from agentguard.review._normalise import rewrite_fields
from agentguard.review._secrets import SecretLeakReviewer, SecretSource
from agentguard.review._shapes import SHAPES

__all__ = [
    "DEFAULT_RULES",
    "SHAPES",
    "Direction",
    "InjectionRule",
    "InjectionScreen",
    "LinearPattern",
    "ModelReviewer",
    "Outcome",
    "PatternError",
    "RequestBlocked",
    "ResponseBlocked",
    "ReviewBlocked",
    "ReviewChain",
    "ReviewContext",
    "ReviewDeadlineExceeded",
    "ReviewStep",
    "Reviewer",
    "ReviewerFunction",
    "ReviewerLike",
    "SecretLeakReviewer",
    "SecretSource",
    "Verdict",
    "checkpoint",
    "fingerprint",
    "rewrite_fields",
]
