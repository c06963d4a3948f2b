"""MkDocs hook: every page says which wsframe version it documents.

The version comes from ``wsframe/__init__.py`` (``__version__``), the one place it is written;
the footer of every page shows it, and ``{{ wsframe_version }}`` in a page becomes it. A missing
or unparsable ``__version__`` fails the build instead of showing a wrong number.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

__all__ = ["PLACEHOLDER", "on_config", "on_page_markdown", "read_version"]

PLACEHOLDER = "{{ wsframe_version }}"


def read_version(root: Path) -> str:
    """Return ``__version__`` from ``root/wsframe/__init__.py`` without importing wsframe.

    Raises ``ValueError`` when the module assigns no string ``__version__``.
    """
    tree = ast.parse((root / "wsframe" / "__init__.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    raise ValueError("wsframe/__init__.py assigns no string __version__")


def on_config(config: Any) -> Any:
    version = read_version(Path(config.config_file_path).parent)
    config.extra["wsframe_version"] = version
    config.copyright = f"These pages document wsframe {version}. MIT License."
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return markdown.replace(PLACEHOLDER, config.extra["wsframe_version"])
