"""The pieces of `make bench` (tools/bench.py): gespann and its peers measured side by side.

The peers: bpftrace, libbpf-tools' tcplife and tcpstates (CO-RE C loaded by libbpf), and bcc's
tcplife and tcpstates where kernel headers let them run.

Each module is one concept: the load generator, the namespace it runs in,
the launched tracer processes, the kernel's per-program statistics, the
medians, the report and the chart.
"""
