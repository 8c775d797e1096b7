"""How many events a test allows the kernel to have run none of gespann's programs for, and why.

On 6.18, under load, a tp_btf or raw_tracepoint program is now and then not run for
an event, and the kernel counts no recursion miss for it (recursion_misses stays 0,
so gespann_probe_runs_missed_total cannot show it). Seen in the suite: 2 ends of
72,000 connections, and up to 4 of 1,250 failed connects. Until that is found, a test
of exactness over many events allows this many per thousand events beyond the runs
the kernel says it missed, and no more: a probe that miscounts by a single event per
connection still fails, and every figure that is counted must be right.

It is the tracepoint, not gespann's programs: with bpftrace's classic tracepoint
program counting SYN_SENT -> CLOSE on inet_sock_set_state in the same namespace
during test_failure_reasons, bpftrace counted 1,249 for the 1,250 failed connects
the application saw end in CLOSE, exactly as gespann did (and no miss, no untracked
end, no failure under another reason). The ones missed were failures an ICMP error
caused (host or network unreachable), while the application held the socket's lock
in getsockopt.
"""

#: Events per thousand the kernel may have run no program for, without saying so, in a test of a thousand
#: events or so; and the most in any one test, whatever its number of events (2 of 72,000 seen).
PER_THOUSAND, FEW = 4, 2


def allowed(events: int) -> int:
    """Events of about a thousand that may go unseen, beyond the runs the kernel counts as missed."""
    return max(FEW, events * PER_THOUSAND // 1000)
