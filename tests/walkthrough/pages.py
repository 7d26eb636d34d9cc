"""Read a Markdown page's shell blocks and the walk-through directives around them.

A page's ```` ```bash ```` (or ``sh``, ``shell``, ``console``) blocks are the commands a reader
types. Directives are HTML comments, invisible on the rendered page::

    <!-- walkthrough: skip runs the test suite itself -->    before a block: not run (say why)
    <!-- walkthrough: skip-line "nox -s" runs the suite -->  before a block: lines holding the
                                                             quoted text are not run (say why)
    <!-- walkthrough: setup                                 before a block: shell lines run
    python examples/gateway/fake_vendors.py &               first (fakes for the page's
    -->                                                      fictional vendors)
    <!-- walkthrough: instead "$EDITOR"                     before a block: the line holding
    cp examples/x.toml agentguard.toml                      the quoted text is replaced by
    -->                                                      these lines (what a reader does
                                                             by hand in an editor)
    <!-- walkthrough: expect REGEX -->                       after a block: its output matches
    <!-- walkthrough: serve URL -->                         before a block that runs until
                                                             stopped: run it in the background
                                                             (a reader's second terminal), wait
                                                             until URL answers; it is stopped
                                                             when the page ends
    <!-- walkthrough: replace OLD NEW -->                    anywhere: in every block, OLD
                                                             becomes NEW (a host, a path)
    <!-- walkthrough: postgresql -->                         anywhere: run the page a second
                                                             time with the store on PostgreSQL

A block without a directive runs and must exit 0.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "Page", "read_page"]

SHELLS = frozenset({"bash", "sh", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
_DIRECTIVE = re.compile(r"<!--\s*walkthrough:\s*(?P<body>.*?)\s*-->", re.DOTALL)


@dataclass
class Block:
    """One shell block of a page and what the directives say about it."""

    line: int
    code: str
    skip: str | None = None
    skipped_lines: list[str] = field(default_factory=list)
    instead: dict[str, str] = field(default_factory=dict)
    setup: list[str] = field(default_factory=list)
    expect: list[str] = field(default_factory=list)
    serve: str | None = None


@dataclass
class Page:
    """A page's shell blocks, in order, and its page-wide directives."""

    path: Path
    blocks: list[Block]
    replacements: list[tuple[str, str]]
    postgresql: bool


def _directive(body: str, path: Path, line: int) -> tuple[str, str]:
    verb, _, rest = body.partition(" " if " " in body.split("\n", 1)[0] else "\n")
    verb = verb.strip()
    known = {"skip", "skip-line", "instead", "setup", "expect", "serve", "replace", "postgresql"}
    if verb not in known:
        raise ValueError(f"{path}:{line}: unknown walkthrough directive {verb!r}")
    if verb == "skip" and not rest.strip():
        raise ValueError(f"{path}:{line}: `walkthrough: skip` needs a reason")
    if verb == "skip-line" and len(shlex.split(rest)) < 2:
        raise ValueError(f'{path}:{line}: write `walkthrough: skip-line "TEXT" reason`')
    return verb, rest.strip()


class _Reader:
    """One pass over a page's lines, collecting blocks and directives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text(encoding="utf-8").split("\n")
        self.page = Page(path=path, blocks=[], replacements=[], postgresql=False)
        self.pending: list[tuple[str, str]] = []

    def fenced(self, index: int, fence: str, info: str) -> int:
        """Take the fenced block opening at ``index``; the index after its closing fence."""
        end = index + 1
        while end < len(self.lines) and not self.lines[end].lstrip().startswith(fence):
            end += 1
        if info in SHELLS:
            block = Block(line=index + 1, code="\n".join(self.lines[index + 1 : end]))
            for verb, rest in self.pending:
                if verb == "skip":
                    block.skip = rest
                elif verb == "skip-line":
                    block.skipped_lines.append(shlex.split(rest)[0])
                elif verb == "setup":
                    block.setup.append(rest)
                elif verb == "instead":
                    quoted, _, lines = rest.partition("\n")
                    block.instead[shlex.split(quoted)[0]] = lines
                else:
                    block.serve = rest
            self.page.blocks.append(block)
        elif self.pending:
            raise ValueError(
                f"{self.path}:{index + 1}: walkthrough directive before a non-shell block"
            )
        self.pending = []
        return end + 1

    def directive(self, index: int) -> int:
        """Take the directive comment starting at ``index``; the index of its last line."""
        start, chunk = index, self.lines[index]
        while "-->" not in chunk and index + 1 < len(self.lines):
            index += 1
            chunk += "\n" + self.lines[index]
        found = _DIRECTIVE.search(chunk)
        if found is None:
            raise ValueError(f"{self.path}:{start + 1}: unterminated walkthrough directive")
        verb, rest = _directive(found["body"], self.path, start + 1)
        if verb == "replace":
            old, new = shlex.split(rest)
            self.page.replacements.append((old, new))
        elif verb == "postgresql":
            self.page.postgresql = True
        elif verb == "expect":
            if not self.page.blocks:
                raise ValueError(f"{self.path}:{start + 1}: `expect` before any block")
            re.compile(rest)
            self.page.blocks[-1].expect.append(rest)
        else:
            self.pending.append((verb, rest))
        return index

    def read(self) -> Page:
        index = 0
        while index < len(self.lines):
            line = self.lines[index]
            opened = _FENCE.match(line)
            if opened:
                info = opened["info"].strip().split(" ")[0].lower()
                index = self.fenced(index, opened["fence"], info)
                continue
            if "<!--" in line and "walkthrough:" in line:
                index = self.directive(index)
            index += 1
        if self.pending:
            raise ValueError(f"{self.path}: a walkthrough directive at the end names no block")
        return self.page


def read_page(path: Path) -> Page:
    """Every shell block of ``path`` with its directives; a malformed directive is an error."""
    return _Reader(path).read()
