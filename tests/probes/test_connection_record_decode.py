"""A connection record decodes into the event its fields say, read field by field with construct (the oracle)
and named with the vocabulary: the fast decoder's positional unpacking cannot swap two fields unseen."""
import random
import socket
import sys

import pytest

from gespann.figures import ConnectionEvent
from gespann.probes.tcp import records
from gespann.probes.tcp.metrics import failure_reason
from gespann.vocabulary import FAILED, OUTCOMES, RESET, RESET_DIRECTIONS, ROLES

RECORD = records.RECORD


def expected_event(fields: dict, clock_offset: float) -> ConnectionEvent:
    """What the record says, field by field, from construct's parse."""
    family = socket.AF_INET6 if fields["family"] == records.AF_INET6 else socket.AF_INET
    size = 16 if family == socket.AF_INET6 else 4

    def address(raw) -> str:
        return socket.inet_ntop(family, bytes(raw)[:size])

    outcome = fields["outcome"]
    reason = (RESET_DIRECTIONS[fields["reason"]] if outcome == RESET else
              failure_reason(fields["reason"]) if outcome == FAILED else "")
    backend = fields["backend_address"].to_bytes(4, sys.byteorder)
    return ConnectionEvent(
        timestamp=fields["end_ns"] / 1e9 + clock_offset, protocol="tcp", role=ROLES[fields["role"]],
        outcome=OUTCOMES[outcome], reason=reason, pid=fields["pid"],
        comm=bytes(fields["comm"]).split(b"\0")[0].decode(), local_address=address(fields["local_address"]),
        local_port=fields["local_port"], remote_address=address(fields["remote_address"]),
        remote_port=socket.ntohs(fields["remote_port"]), bytes_sent=fields["bytes_sent"],
        bytes_received=fields["bytes_received"], duration_seconds=fields["duration_ns"] / 1e9,
        rtt_seconds=None if outcome == FAILED else fields["srtt_us"] / 1e6, retransmits=fields["retransmits"],
        cgroup_id=fields["cgroup_id"], container_id=f"c{fields['cgroup_id']}" if fields["cgroup_id"] else "",
        preexisting=bool(fields["preexisting"]), drops=fields["drops"],
        drop_reason=f"r{fields['drop_reason']}" if fields["drops"] else "",
        backend_address=socket.inet_ntop(socket.AF_INET, backend) if fields["backend_port"] else "",
        backend_port=socket.ntohs(fields["backend_port"]))


def random_record(rng: random.Random) -> bytes:
    family = rng.choice((socket.AF_INET, records.AF_INET6))
    outcome = rng.randrange(len(OUTCOMES))
    data = bytearray(rng.getrandbits(8) for _ in range(RECORD.size))
    fields = dict(RECORD.parse(bytes(data)))
    fields.update(family=family, outcome=outcome, role=rng.randrange(len(ROLES)),
                  reason=rng.randrange(len(RESET_DIRECTIONS)) if outcome == RESET else rng.choice((0, 111, 113, 110)),
                  comm=b"client-\xc3\xa9\0" + bytes(6), preexisting=rng.randrange(2),
                  drops=rng.choice((0, 3)), backend_port=rng.choice((0, socket.htons(8080))))
    return RECORD.build({name: value for name, value in fields.items() if not name.startswith("_")})


@pytest.mark.parametrize("seed", range(5))
def test_decode_equals_the_records_fields(seed):
    rng = random.Random(seed)
    for _ in range(200):
        data = random_record(rng)
        fields = RECORD.parse(data)
        decoded = records.decode(data + bytes(8), 1.7e9, lambda cgroup: f"c{cgroup}", lambda code: f"r{code}")
        assert type(decoded) is ConnectionEvent
        assert decoded == expected_event(fields, 1.7e9)
