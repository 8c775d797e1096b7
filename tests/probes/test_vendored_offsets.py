"""The vendored-offsets rule at work on the running kernel, whatever its release.

No committed table is for the kernel the test runs on (the CI machine's build
changes, and so do the matrix's). The test makes this kernel's table now, with
the project's generator, and shows the rule: only the table made for the exact
build is used; a table of another build of the same series is refused, and
the refusal names it, the command that makes the right table, and how to name
the near table knowingly; named so, it is used.

The tcp_states probe scoped to a namespace of the test's own reads struct
offsets (the socket's namespace), so wrong offsets would not count exactly.
"""
import os
import shutil
import subprocess
import sys

import pytest
from loopback import CLOSE, Loopback, wait_for
from namespaces import Namespace

from gespann.btf import vendored
from gespann.probes import AttachSettings, ProbeSet, ProbeUnavailable
from gespann.probes.examples import tcp_states

pytestmark = pytest.mark.root
RELEASE, MACHINE = os.uname().release, os.uname().machine
#: A release of the same series that no kernel here runs: "another build".
OTHER_BUILD = f"{RELEASE}-other-build"
CONNECTIONS = 3


@pytest.fixture
def near_only(running_kernel_tables, tmp_path, monkeypatch):
    """A tables directory holding only another build's table (this kernel's content, another release)."""
    near = vendored.table_path(OTHER_BUILD, MACHINE, tmp_path)
    near.parent.mkdir(parents=True)
    shutil.copy(vendored.table_path(RELEASE, MACHINE, running_kernel_tables), near)
    monkeypatch.setenv(vendored.TABLES_ENV, str(tmp_path))
    return near


def counts_exactly(namespace: Namespace, btf_source: str) -> None:
    settings = AttachSettings(mode="raw_tracepoint", btf_source=btf_source, netns=namespace.inode)
    with ProbeSet.attach([tcp_states.PROBE], settings) as probes:
        with namespace.enter():
            inside = Loopback()
            inside.run(CONNECTIONS)
            inside.listener.close()
        counters = probes["tcp_states"].maps["state_counts"]
        observed = lambda: {s: sum(c) for s, c in counters.items() if sum(c)}  # noqa: E731
        expected = inside.expected_counts(CONNECTIONS)
        wait_for(lambda: observed().get(CLOSE) == expected[CLOSE])
        assert observed() == expected


def test_this_kernels_table_made_now_counts_exactly(namespace, vendored_tables_of_this_kernel):
    assert (MACHINE, RELEASE) in vendored.available(vendored_tables_of_this_kernel)
    counts_exactly(namespace, "vendored")


def test_another_builds_table_is_refused_naming_it(near_only):
    with pytest.raises(ProbeUnavailable) as raised:
        ProbeSet.attach([tcp_states.PROBE], AttachSettings(mode="raw_tracepoint", btf_source="vendored"))
    message = str(raised.value)
    assert f"holds no table for kernel {RELEASE} ({MACHINE})" in message
    assert (f"the nearest, {OTHER_BUILD}, is another build, whose struct offsets may differ, so it is not used"
            in message)
    assert "python3 tools/vmlinux_tables.py --out" in message and " running" in message
    assert f"name it as btf.source: {near_only}" in message
    assert message.count("btf.source 'vendored' was asked for") == 1


def test_another_builds_table_named_knowingly_is_used(namespace, near_only):
    counts_exactly(namespace, str(near_only))


@pytest.mark.process
def test_check_and_run_refuse_in_one_line(near_only, tmp_path):
    config = tmp_path / "gespann.yaml"
    config.write_text("btf: {source: vendored}\nscope: {protocols: [tcp]}\n"
                      "exporters: [{type: prometheus, settings: {port: 1, address: 127.0.0.1}}]\n")
    for command in ("check", "run"):
        done = subprocess.run([sys.executable, "-m", "gespann", command, "--config", str(config)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done
        errors = [line for line in done.stderr.splitlines() if " INFO " not in line]
        if command == "run":
            assert len(errors) == 1 and errors[0].startswith("gespann: probe tcp_lifecycle cannot attach"), errors
            assert f"the nearest, {OTHER_BUILD}" in errors[0]
        else:
            assert done.stdout.splitlines()[-1].startswith("verdict         cannot run: tcp_lifecycle"), done.stdout
