"""Resolution in a child process: the same answer and the same errors as resolving here, and a fallback."""

from __future__ import annotations

import errno
import os

import pytest

from gespann.btf import apart, errors
from gespann.btf.sources import VMLINUX_BTF

needs_btf = pytest.mark.skipif(not VMLINUX_BTF.exists(), reason="kernel has no /sys/kernel/btf/vmlinux")
RELEASE, MACHINE = "6.1.0-test", "x86_64"


@needs_btf
def test_a_child_resolves_what_this_process_would():
    here = apart.resolve_here(VMLINUX_BTF, RELEASE, MACHINE)
    child = apart.resolve_apart(VMLINUX_BTF, RELEASE, MACHINE)
    assert (child.fields, child.funcs, child.tracepoints, child.enums) == \
           (here.fields, here.funcs, here.tracepoints, here.enums)
    assert (child.release, child.machine, child.source) == (RELEASE, MACHINE, str(VMLINUX_BTF))


def test_the_childs_error_is_raised_here_with_its_class_and_message(tmp_path):
    broken = tmp_path / "vmlinux"
    broken.write_bytes(b"\x9f\xeb\x01\x00" + bytes(8))  # a BTF magic, then a header cut short
    with pytest.raises(errors.MalformedBTF) as in_process:
        apart.resolve_here(broken, RELEASE, MACHINE)
    with pytest.raises(errors.MalformedBTF) as from_child:
        apart.resolve_apart(broken, RELEASE, MACHINE)
    assert str(from_child.value) == str(in_process.value)


def test_a_bug_in_the_child_comes_back_with_its_traceback(tmp_path, monkeypatch):
    def broken(path, release, machine, extra):
        raise ZeroDivisionError("a bug in the parser")

    monkeypatch.setattr(apart, "resolve_here", broken)  # the fork inherits it
    with pytest.raises(errors.BTFError, match="(?s)Traceback.*ZeroDivisionError: a bug in the parser"):
        apart.resolve_apart(tmp_path / "vmlinux", RELEASE, MACHINE)


def test_a_child_that_dies_without_answering_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(apart, "resolve_here", lambda *args: os._exit(3))
    with pytest.raises(errors.BTFError, match="ended without an answer \\(exit status 3\\)"):
        apart.resolve_apart(tmp_path / "vmlinux", RELEASE, MACHINE)


@needs_btf
def test_without_a_child_it_resolves_here(monkeypatch, caplog):
    def refused():
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(os, "fork", refused)
    with caplog.at_level("DEBUG", logger="gespann.btf.apart"):
        types = apart.resolve_apart(VMLINUX_BTF, RELEASE, MACHINE)
    assert types.offset("sock_common.skc_dport") > 0
    assert "no child process" in caplog.text
