"""Benchmarks of wsframe against a hand-written raw aiohttp server, measured in the same run.

Run everything with ``python -m benchmarks.run`` (``--smoke`` for a seconds-long check);
see ``docs/benchmarks.md`` for what each case measures and the latest numbers.
"""

from __future__ import annotations

__all__: list[str] = []
