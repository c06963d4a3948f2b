"""One-off tools for looking into a figure: ``profiling`` (py-spy), ``memory`` (tracemalloc by allocation
site) and ``instructions`` (callgrind instruction counts, the repeatable figure to watch while optimising)."""

__all__: list[str] = []
