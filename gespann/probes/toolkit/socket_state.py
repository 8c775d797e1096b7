"""The socket state-change event, which several probes hook: its flavours and arguments.

The kernel reports every inet socket state change through the
sock:inet_sock_set_state tracepoint, fired from exactly two functions,
inet_sk_state_store and inet_sk_set_state, both `(struct sock *sk, int state)`.
The fentry and kprobe flavours hook those and read the old state from the
socket before it changes. Arguments: sk, oldstate, newstate, protocol (the
tracepoint also fires for SCTP and MPTCP sockets).

The states are C ints, declared so: on 5.10 a fentry program sees stale
stack in the upper half of `newstate`'s slot, and read whole, most
transitions looked like states out of range.
"""

from __future__ import annotations

from .arguments import Arg
from .flavours import BtfTracepoint, Fentry, Kprobe, RawTracepoint, Tracepoint

IPPROTO_TCP = 6

# enum tcp_state (include/net/tcp_states.h)
ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2 = 1, 2, 3, 4, 5
CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING = 7, 8, 9, 10, 11
#: The states of a full socket whose connection is open.
OPEN_STATES = (ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING)
#: States in which the peer's FIN has arrived (bytes_received counts its sequence number).
PEER_FIN_IN = (CLOSE_WAIT, LAST_ACK, CLOSING)

STATE_FUNCTIONS = ("inet_sk_state_store", "inet_sk_set_state")

#: TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
TRACEPOINT_ARGS = ("sk", Arg.c_int("oldstate"), Arg.c_int("newstate"))
#: inet_sk_state_store(struct sock *sk, int newstate), inet_sk_set_state(struct sock *sk, int state)
FUNCTION_ARGS = ("sk", Arg.c_int("newstate"))

#: In each probe's order of preference.
FLAVOURS = (
    BtfTracepoint("inet_sock_set_state", args=TRACEPOINT_ARGS),
    RawTracepoint("inet_sock_set_state", args=TRACEPOINT_ARGS),
    Tracepoint("sock", "inet_sock_set_state",
               fields={"sk": "skaddr", "oldstate": "oldstate", "newstate": "newstate", "protocol": "protocol"}),
    Fentry(STATE_FUNCTIONS, args=FUNCTION_ARGS),
    Kprobe(STATE_FUNCTIONS, args=FUNCTION_ARGS),
)

#: What a flavour does not carry, read from the socket.
DERIVED = {"protocol": ("sk", "sock.sk_protocol"), "oldstate": ("sk", "sock_common.skc_state")}
