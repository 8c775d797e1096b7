"""The pieces of `make bench` (tools/bench.py): gespann and its peers measured side by side.

Each module is one concept: the load generator, the namespace it runs in,
the launched tracer processes, the kernel's per-program statistics, the
medians, the report and the chart.
"""
