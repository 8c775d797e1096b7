"""The pieces of tools/kernel_matrix.py: which kernels, how the suite runs on each, and the table.

Kernel-free parts (modes, junit, verdicts, report) are unit-tested in tests/tools;
the parts that boot VMs (kernels, virtme, runner) only run from the tool.
"""
