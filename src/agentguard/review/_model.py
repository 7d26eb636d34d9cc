"""ModelReviewer: a second opinion from any model client, as one more reviewer in the chain.

The adapter asks an async callable ``(context, text) -> bool | Verdict | str`` and turns its
answer into a :class:`~agentguard.review.Verdict`: ``True`` or ``"allow"`` allows, ``False``
or ``"block"`` blocks; a :class:`Verdict` is used as it is (redactions included). Anything
else is an error, which the chain turns into a block unless the step has ``on_error="allow"``.

Model calls are slow and can fail, so give the step a generous timeout and decide its error
policy on purpose::

    ReviewStep(ModelReviewer(ask_my_llm), timeout=5.0, on_error="block")

The callable receives the decoded body; the adapter never logs or stores it. Whether the model
provider may keep it is between you and the provider.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agentguard.review._base import ReviewContext, Verdict

__all__ = ["ModelReviewer"]

ModelAnswer = bool | Verdict | str
Ask = Callable[[ReviewContext, str], Awaitable[ModelAnswer]]


class ModelReviewer:
    """Wraps ``ask`` (an LLM client call) as a :class:`~agentguard.review.Reviewer`.

    Args:
        ask: ``async (context, text) -> bool | Verdict | str``.
        name: the name in verdicts and audit events.
        block_reason: the reason recorded when the model says no without a verdict of its own.
        max_chars: bodies longer than this are not sent to the model; the reviewer blocks
            them (``over_limit="block"``) or allows them (``"allow"``), so a model's context
            window is never a silent bypass.
    """

    streaming = False

    def __init__(
        self,
        ask: Ask,
        *,
        name: str = "model",
        block_reason: str = "model_flagged",
        max_chars: int = 32_000,
        over_limit: str = "block",
    ) -> None:
        if over_limit not in ("block", "allow"):
            raise ValueError("over_limit is 'block' or 'allow'")
        self.ask = ask
        self.name = name
        self.block_reason = block_reason
        self.max_chars = max_chars
        self.over_limit = over_limit

    def __repr__(self) -> str:
        return f"ModelReviewer(name={self.name!r})"

    async def review(self, context: ReviewContext, content: str) -> Verdict:
        """Ask the model; map its answer to a verdict."""
        if len(content) > self.max_chars:
            if self.over_limit == "allow":
                return Verdict.allow(self.name, "too_long_for_model")
            return Verdict.block(self.name, "too_long_for_model")
        answer = await self.ask(context, content)
        if isinstance(answer, Verdict):
            return answer
        if isinstance(answer, bool):
            if answer:
                return Verdict.allow(self.name)
            return Verdict.block(self.name, self.block_reason)
        if isinstance(answer, str):
            word = answer.strip().lower()
            if word in ("allow", "allowed", "safe", "yes", "ok"):
                return Verdict.allow(self.name)
            if word in ("block", "blocked", "unsafe", "no", "deny"):
                return Verdict.block(self.name, self.block_reason)
        raise ValueError("the model's answer is not allow/block")
