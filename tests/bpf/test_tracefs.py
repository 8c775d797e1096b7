"""Tracepoint formats: parsed from the text the kernel prints, never from hard-coded offsets."""
import ctypes
import os

import pytest

from gespann.bpf import tracefs
from gespann.bpf.errors import BPFError, TracepointNotFoundError

SAMPLE = """name: sched_process_exec
ID: 321
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:24;\tsize:16;\tsigned:0;
\tfield:char comm[TASK_COMM_LEN];\toffset:40;\tsize:16;\tsigned:1;
\tfield:int oldstate;\toffset:56;\tsize:4;\tsigned:1;

print fmt: "filename=%s", __get_str(filename)
"""


def test_parse_sample_format():
    fmt = tracefs.parse_format(SAMPLE, "sched")
    assert (fmt.category, fmt.name, fmt.id, fmt.size) == ("sched", "sched_process_exec", 321, 60)
    assert [f.name for f in fmt.fields if f.common] == ["common_type", "common_flags", "common_preempt_count",
                                                        "common_pid"]
    filename = fmt.field("filename")
    assert (filename.type, filename.offset, filename.size, filename.data_loc, filename.array_len) == \
        ("char[]", 8, 4, True, None)
    skaddr = fmt.field("skaddr")
    assert (skaddr.type, skaddr.offset, skaddr.size, skaddr.signed) == ("const void *", 16, 8, False)
    saddr = fmt.field("saddr_v6")
    assert (saddr.type, saddr.array_len, saddr.element_size) == ("__u8", 16, 1)
    assert fmt.field("comm").array_len is None  # a length the kernel left as a macro name
    assert fmt.field("oldstate").signed and fmt.offset("oldstate") == 56


def test_unknown_field_lists_the_fields():
    with pytest.raises(BPFError) as missing:
        tracefs.parse_format(SAMPLE, "sched").field("newstate")
    assert "sched:sched_process_exec has no field 'newstate'" in str(missing.value)
    assert "'oldstate'" in str(missing.value)


def test_not_a_format_file():
    with pytest.raises(BPFError):
        tracefs.parse_format("name: x\nformat:\n", "c", "x")


def test_read_format_from_a_tree(tmp_path):
    events = tmp_path / "events" / "sched" / "sched_process_exec"
    events.mkdir(parents=True)
    (events / "format").write_text(SAMPLE)
    assert tracefs.read_format("sched", "sched_process_exec", root=str(tmp_path)).id == 321
    with pytest.raises(TracepointNotFoundError) as missing:
        tracefs.read_format("sched", "sched_process_fork", root=str(tmp_path))
    assert str(missing.value) == f"tracepoint sched:sched_process_fork does not exist on kernel {os.uname().release}"
    with pytest.raises(ValueError):
        tracefs.read_format("..", "x", root=str(tmp_path))


def test_mounted_tracefs_prefers_the_standard_place(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("debugfs /sys/kernel/debug debugfs rw 0 0\n"
                      "tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n")
    assert tracefs._mounted_tracefs(str(mounts)) == "/sys/kernel/debug/tracing"
    mounts.write_text(mounts.read_text() + "nodev /sys/kernel/tracing tracefs rw 0 0\n")
    assert tracefs._mounted_tracefs(str(mounts)) == "/sys/kernel/tracing"
    mounts.write_text("proc /proc proc rw 0 0\n")
    assert tracefs._mounted_tracefs(str(mounts)) is None


@pytest.mark.root
def test_the_kernel_format_of_inet_sock_set_state(state_format):
    with open(os.path.join(tracefs.tracefs_root(), "events/sock/inet_sock_set_state/id")) as f:
        assert state_format.id == int(f.read())
    fields = {f.name: f for f in state_format.fields}
    assert {"oldstate", "newstate", "sport", "dport", "family", "protocol", "saddr", "daddr"} <= set(fields)
    assert (fields["sport"].size, fields["saddr"].array_len, fields["oldstate"].signed) == (2, 4, True)


@pytest.mark.root
def test_mounting_tracefs(tmp_path):
    """What tracefs_root does where tracefs is not mounted, here on a directory of our own."""
    tracefs._mount_tracefs(str(tmp_path))
    try:
        assert (tmp_path / "events" / "sock" / "inet_sock_set_state" / "format").exists()
    finally:
        assert ctypes.CDLL(None, use_errno=True).umount2(str(tmp_path).encode(), 0) == 0
