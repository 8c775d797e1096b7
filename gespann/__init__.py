"""gespann: network-connection observability for Linux, with eBPF and without a compiler."""

__version__ = "0.1.0"
