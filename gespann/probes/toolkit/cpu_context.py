"""Whether a program runs for a task (its system call) or in an interrupt that borrowed whatever task was on the CPU.

A packet is usually sent inside the sender's sendmsg(), but one that waited
for neighbour resolution leaves from the softirq that handled the answer, and
`current` is then whatever task that softirq interrupted. The kernel's own
test, the preempt count, is a per-CPU variable on x86-64 that a program can
reach only through a kallsyms entry for data (CONFIG_KALLSYMS_ALL, which this
development host lacks). The stack tells as much: softirqs (on the way out of
an interrupt, or run by local_bh_enable()), hardirqs and NMIs run on per-CPU
interrupt stacks, while a task in a system call runs on its own kernel stack,
from task->stack up. So the event is in task context exactly when an address
on the stack the tracepoint fired on lies within THREAD_SIZE of task->stack.

Which address: not the program's frame (R10), which since 6.13 may be a
per-CPU private stack. A raw tracepoint's or tp_btf's context is the argument
array that bpf_trace_runN() keeps on the kernel stack; a perf tracepoint's
context is a per-CPU record, whose first 8 bytes (hidden from the program)
point to the pt_regs perf filled in, with `sp` the tracepoint's frame.

The bound is THREAD_SIZE of x86-64 and arm64 kernels (16 KiB; a KASAN
kernel's 32 KiB stacks make events high on them look like interrupts, so
who sent is then not noted).

What this cannot tell: an interrupt that arrives while a task runs in user
mode is handled on that task's (empty) kernel stack, softirqs included, so a
packet sent from such a softirq still names the interrupted task. With
PREEMPT_RT, softirqs run in task context too. The check only narrows the
cases; udp_flows documents what is left.
"""

from __future__ import annotations

from asm import DW, R0, R1, R2, R3, R10, Program, Slot

from .arguments import Arguments, TracepointArguments
from .kernel_memory import emit_read_field
from .probe import BuildTarget

#: Bytes above task->stack that are the task's own kernel stack, at most.
THREAD_SIZE = 16 * 1024


def emit_save_context(p: Program, args: Arguments, slot: Slot) -> None:
    """Keep the context pointer in stack `slot` for `emit_skip_in_interrupt`, before its register is reused."""
    p.stx(DW, R10, slot.at(), args.ctx)


def emit_skip_in_interrupt(p: Program, args: Arguments, target: BuildTarget, skip: str, context_slot: Slot,
                           scratch: Slot) -> None:
    """Emit a jump to `skip` unless the event fired on the current task's kernel stack.

    `context_slot` holds what `emit_save_context` saved; `scratch` is a free 8-byte slot. Clobbers R0-R5.
    """
    types = target.kernel_types
    # The context's address as a number: copied out of the slot it was spilled to (the verifier
    # would not follow a pointer compared with a number).
    _emit_copy(p, scratch, context_slot)
    if isinstance(args, TracepointArguments):
        p.ldx(DW, R3, R10, scratch.at())
        _emit_copy(p, scratch, None)  # the pt_regs pointer perf stored at the record's start
        p.ldx(DW, R1, R10, scratch.at())
        emit_read_field(p, R1, R1, types.field("pt_regs.sp"), scratch)
        p.stx(DW, R10, scratch.at(), R1)
    p.call("get_current_task")
    emit_read_field(p, R0, R0, types.field("task_struct.stack"), context_slot)
    p.ldx(DW, R1, R10, scratch.at())
    p.sub(R1, R0)
    p.jge(R1, THREAD_SIZE, skip)  # below task->stack too: the difference wraps round to a huge number


def _emit_copy(p: Program, dst: Slot, src: Slot | None) -> None:
    """8 bytes to the stack slot `dst`, from the slot `src`, or (None) from the address in R3."""
    p.st(DW, R10, dst.at(), 0)
    p.mov(R1, R10)
    p.add(R1, dst.at())
    p.mov(R2, 8)
    if src is not None:
        p.mov(R3, R10)
        p.add(R3, src.at())
    p.call("probe_read_kernel")
