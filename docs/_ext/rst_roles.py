"""Griffe extension: render the reST bits of wsframe's docstrings as Markdown.

The docstrings follow the Python convention (``:class:`X```, double backquotes,
``::`` before an example); mkdocstrings reads Markdown. This rewrites them
before rendering, so the API reference shows ``X`` as code instead of raw roles.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

__all__ = ["RstRoles", "to_markdown"]

_ROLE = re.compile(r":(?:class|meth|func|attr|data|exc|mod|obj):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_BLOCK_INTRO = re.compile(r"::$", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def to_markdown(text: str) -> str:
    """Return *text* with reST roles and literals as Markdown code, ``::`` as ``:``."""
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"`\1`", text)
    return _BLOCK_INTRO.sub(":", text)


class RstRoles(griffe.Extension):
    """Rewrites every docstring with :func:`to_markdown` as griffe loads it."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
