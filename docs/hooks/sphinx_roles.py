"""Griffe extension: Sphinx cross-reference roles in docstrings become links in the site.

The docstrings use reStructuredText roles (``:class:`Guard```, ``:meth:`~Guard.authenticate```,
``:func:`agentguard.current_principal```), which Markdown would print literally. Once the
whole package is loaded, this extension rewrites every role into an ``<autoref optional>``
element that mkdocs-autorefs turns into a link when the target is rendered somewhere in the
site, and into plain code when it is not (a private helper, a builtin such as ``ValueError``),
so an unrendered target never breaks the strict build.

Names resolve the way Sphinx resolves them: a dotted path as written, a bare name in the scope
of the object whose docstring mentions it (its members, then its module's names and imports),
``~`` shortens the shown text to the last component. Resolved paths are canonical, the paths
under which mkdocstrings registers the objects it renders.

Registered in mkdocs.yml under the python handler's ``extensions`` option; the docstrings in
``src`` stay unchanged, so ``help()`` reads the same as before.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

#: A Sphinx Python-domain role: ``:kind:`target``` with an optional ``~`` or ``!`` prefix and
#: an optional ``title <target>`` form.
ROLE = re.compile(
    r":(?:py:)?(?P<kind>class|func|meth|attr|mod|data|exc|obj|const|type):"
    r"`(?P<body>[^`]+)`"
)
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a package into optional autorefs."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Walk the fully loaded package: aliases and imports resolve only from here on."""
        seen: set[str] = set()
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.path in seen:
                continue
            seen.add(obj.path)
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = _rewrite(obj.docstring.value, obj, loader)
            stack.extend(
                member
                for member in obj.members.values()
                if not member.is_alias and isinstance(member, griffe.Object)
            )


def _rewrite(text: str, owner: griffe.Object, loader: griffe.GriffeLoader) -> str:
    """``text`` with every role replaced by an optional autoref (or plain code)."""
    return ROLE.sub(lambda match: _autoref(match, owner, loader), text)


def _autoref(match: re.Match[str], owner: griffe.Object, loader: griffe.GriffeLoader) -> str:
    body = match["body"].strip()
    titled = _TITLED.match(body)
    title: str | None = titled["title"] if titled else None
    target = titled["target"] if titled else body
    short = target.startswith("~")
    target = target.lstrip("~!")
    if title is None:
        title = target.rsplit(".", 1)[-1] if short else target
    if match["kind"] in {"func", "meth"} and not title.endswith(")"):
        title += "()"
    code = f"<code>{html.escape(title)}</code>"
    identifier = _resolve(target, owner, loader)
    if identifier is None:
        return code
    return f'<autoref identifier="{html.escape(identifier)}" optional>{code}</autoref>'


def _resolve(target: str, owner: griffe.Object, loader: griffe.GriffeLoader) -> str | None:
    """The canonical path of ``target`` seen from ``owner``, or None (a builtin, a typo)."""
    head, _, rest = target.partition(".")
    candidates = [target]
    try:
        resolved_head = owner.resolve(head)
    except (griffe.NameResolutionError, griffe.AliasResolutionError):
        pass
    else:
        candidates.insert(0, f"{resolved_head}.{rest}" if rest else resolved_head)
    for candidate in candidates:
        try:
            found = loader.modules_collection.get_member(candidate)
        except (KeyError, ValueError, griffe.AliasResolutionError):
            continue
        try:
            return str(found.final_target.path) if found.is_alias else str(found.path)
        except griffe.AliasResolutionError:
            return str(candidate)
    return None
