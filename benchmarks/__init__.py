"""wsframe against a hand-written raw aiohttp server, in the same run: ``python -m benchmarks.run [--smoke]``.
See docs/benchmarks.md for what each case measures and the latest numbers."""

from __future__ import annotations

__all__: list[str] = []
