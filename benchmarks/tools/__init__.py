"""One-off tools: ``instructions`` (callgrind instruction counts, the repeatable figure to watch)."""

__all__: list[str] = []
