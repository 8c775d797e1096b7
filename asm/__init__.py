"""A standalone eBPF assembler: Python DSL, LLVM-syntax text, and bytecode. It never touches the kernel."""
