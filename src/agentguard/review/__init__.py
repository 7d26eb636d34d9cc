"""Reviewers: screening what the agent sends and what it reads, below the model.

The prompt already failed, so the content itself is checked: a :class:`ReviewChain` of
reviewers runs on the agent's outgoing request (before the upstream or the route sees it) and on
the response (before the model reads it). Built-ins: :class:`SecretLeakReviewer` (real
credentials and checksummed credential shapes), :class:`InjectionScreen` (prompt and script
injection, a tunable scored rule set) and :class:`ModelReviewer` (your own model's opinion).
"""

from agentguard.review.base import (
    Direction,
    Outcome,
    ReviewContext,
    Reviewer,
    ReviewerFunction,
    Verdict,
    fingerprint,
)
from agentguard.review.chain import ChainResult, ReviewChain, ReviewerLike, ReviewStep, as_chain
from agentguard.review.errors import RequestBlocked, ResponseBlocked, ReviewBlocked
from agentguard.review.events import verdict_event
from agentguard.review.injection import DEFAULT_RULES, InjectionRule, InjectionScreen
from agentguard.review.model import ModelReviewer
from agentguard.review.normalise import normalise
from agentguard.review.secrets import SecretLeakReviewer, SecretSource
from agentguard.review.shapes import SHAPES
from agentguard.review.stream import ChainStream

__all__ = [
    "DEFAULT_RULES",
    "SHAPES",
    "ChainResult",
    "ChainStream",
    "Direction",
    "InjectionRule",
    "InjectionScreen",
    "ModelReviewer",
    "Outcome",
    "RequestBlocked",
    "ResponseBlocked",
    "ReviewBlocked",
    "ReviewChain",
    "ReviewContext",
    "ReviewStep",
    "Reviewer",
    "ReviewerFunction",
    "ReviewerLike",
    "SecretLeakReviewer",
    "SecretSource",
    "Verdict",
    "as_chain",
    "fingerprint",
    "normalise",
    "verdict_event",
]
