"""`gespann check` tells the truth: what it reports matches what attaching actually does here.

These tests run on every kernel of the kernel matrix, so the report is checked
against each kernel's own behaviour, not against a table of versions.
"""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gespann.cli import main
from gespann.config import Config
from gespann.probes import ALL_PROBES, AttachSettings, trial_attach
from gespann.probes.tcp.nat import conntrack_layout

pytestmark = pytest.mark.root

#: The feature(s) each attach mode rests on; a mode works when any of them is available.
MODE_FEATURES = {
    "fentry": ("fentry",),
    "tp_btf": ("tp_btf",),
    "raw_tracepoint": ("raw_tracepoint",),
    "tracepoint": ("tracepoint",),
    "kprobe": ("kprobe_pmu", "kprobe_events"),
}


@pytest.fixture(scope="module")
def report() -> dict:
    """`gespann check --json`, run in this process: a fresh interpreter costs minutes in an emulated VM."""
    result = CliRunner().invoke(main, ["check", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def attaches(probe, mode: str) -> bool:
    """Whether `probe` attaches here with `mode` forced, asked of the kernel by attaching it."""
    return trial_attach(probe, AttachSettings(mode=mode)).flavour is not None


def test_the_report_is_about_this_kernel(report):
    assert report["kernel"] == os.uname().release
    assert report["fatal"] is None and report["missing_capabilities"] == []
    assert report["type_information"], report["type_information_error"]
    # The probes the default config attaches: tcp_nat only serves labels.peers, off by default.
    assert {p["probe"] for p in report["probes"]} == {p.name for p in ALL_PROBES if p.wanted(Config())}


def kernel_has(flavour) -> bool:
    """Whether this kernel has the probe points `flavour` attaches to: its tracepoint (in tracefs), or its
    functions (in kallsyms). A probe on a newer tracepoint (tcp_icmp_errors on icmp:icmp_send, 6.11) lacks it
    on older kernels, whatever the mode."""
    from gespann.bpf.tracefs import tracefs_root

    if flavour.mode in ("fentry", "kprobe"):
        with open("/proc/kallsyms") as f:
            symbols = {line.split()[2] for line in f}
        return all(target in symbols for target in flavour.targets)
    events = os.path.join(tracefs_root(), "events")
    names = {name for category in os.listdir(events) if os.path.isdir(os.path.join(events, category))
             for name in os.listdir(os.path.join(events, category))}
    return all(target.split("/")[-1] in names for target in flavour.targets)


def test_reported_features_match_what_attaches(report):
    """Each mode works for every probe that has it exactly where check says its feature is there (and the
    kernel has the probe's tracepoint or functions)."""
    available = {feature["name"]: feature["available"] for feature in report["features"]}
    for probe in ALL_PROBES:
        if probe.name == "tcp_nat" and isinstance(conntrack_layout(), str):
            continue  # no conntrack types here: it is left out, and check's NAT line says why
        attached_as = {flavour.mode: attaches(probe, flavour.mode) for flavour in probe.flavours}
        if not probe.required and not any(attached_as.values()):
            continue  # left out on this kernel (inbound_refused before 5.17): check's probe line says why
        for flavour in probe.flavours:
            attached = attached_as[flavour.mode]
            expected = any(available[name] for name in MODE_FEATURES[flavour.mode]) and kernel_has(flavour)
            assert attached == expected, f"{probe.name} as {flavour}: check says {expected}, attaching says {attached}"


def test_each_probe_reports_the_flavour_that_attaches_first(report):
    """The flavour check names is the first, in the probe's order, that attaches when forced alone;
    each one before it is listed as passed over, with a reason."""
    for trial in report["probes"]:
        probe = next(p for p in ALL_PROBES if p.name == trial["probe"])
        if trial["flavour"] is None and not trial["required"]:
            assert not any(attaches(probe, flavour.mode) for flavour in probe.flavours), trial
            assert set(trial["passed_over"]) == {str(f) for f in probe.flavours}, trial
            continue  # left out on this kernel, with each flavour's reason
        first = next(i for i, flavour in enumerate(probe.flavours) if attaches(probe, flavour.mode))
        assert trial["flavour"] == str(probe.flavours[first]), trial
        assert trial["path"]
        assert set(trial["passed_over"]) == {str(f) for f in probe.flavours[:first]}, trial
        assert all(trial["passed_over"].values()), trial


def test_the_path_for_open_connections_is_the_one_run_takes(report, tmp_path):
    """check names how open connections are read: the kernel walk exactly where attaching the TCP probes
    gives one, sock_diag (with the reason) elsewhere and where the config asks for it."""
    from gespann.probes import ProbeSet
    from gespann.probes.tcp import lifecycle as tcp_lifecycle
    from gespann.probes.tcp import resets as tcp_resets
    from gespann.probes.tcp import walk as tcp_walk

    with ProbeSet.attach((tcp_lifecycle.PROBE, *tcp_resets.PROBES), AttachSettings()) as probes:
        walks = probes.walks["tcp_lifecycle"] is not None
    assert report["open_connections"].startswith("kernel walk" if walks else "sock_diag"), report["open_connections"]
    if not walks:  # the reason is the kernel's refusal, or a TCP probe that cannot use socket storage
        why = tcp_walk.unavailable_reason()
        assert (why is not None and why in report["open_connections"]
                or "cannot use socket storage" in report["open_connections"]), report["open_connections"]
    config = tmp_path / "gespann.yaml"
    config.write_text("attach: {open_connections: user_space}\n")
    result = CliRunner().invoke(main, ["check", "--json", "--config", str(config)])
    assert json.loads(result.stdout)["open_connections"].endswith("(attach.open_connections: user_space)")
    config.write_text("attach: {open_connections: walk}\n")
    result = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert result.exit_code == 2 and "attach.open_connections" in result.output


def run_cli(*args: str, drop: str = "") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gespann", *args]
    if drop:
        command = ["capsh", f"--drop={drop}", "--", "-c", " ".join(command)]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)


@pytest.mark.process
def test_cli_ready_as_root():
    result = run_cli("check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "verdict         ready"
    report = json.loads(run_cli("check", "--json").stdout)
    assert report["fatal"] is None
    assert report["missing_capabilities"] == []


@pytest.mark.process
def test_cli_without_bpf_capabilities_says_which_and_fails():
    result = run_cli("check", "--json", drop="cap_bpf,cap_perfmon,cap_sys_admin")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["missing_capabilities"] == ["CAP_BPF", "CAP_PERFMON"]
    assert "CAP_BPF" in report["fatal"]


@pytest.mark.process
def test_run_without_bpf_capabilities_is_one_line_naming_the_capability():
    result = run_cli("run", drop="cap_bpf,cap_perfmon,cap_sys_admin")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("gespann: ")]
    assert len(errors) == 1, result.stderr
    assert "lacks CAP_BPF" in errors[0]
    assert "Traceback" not in result.stderr


def test_drop_reasons_say_whether_the_kernel_names_them(report, tmp_path):
    from gespann.bpf.tracefs import read_format

    passed = any(field.name == "reason" for field in read_format("skb", "kfree_skb").fields)
    if not passed:
        assert report["drop_reasons"].startswith("no: this kernel's kfree_skb passes no reason")
    else:
        from gespann.btf import kernel_types

        named = kernel_types("auto").enum("skb_drop_reason")
        expected = (f"yes: {len(named)} reasons, named from the kernel's BTF" if named else "by number only: ")
        assert report["drop_reasons"].startswith(expected), report["drop_reasons"]
    config = tmp_path / "off.yaml"
    config.write_text("attach: {probes: {packet_drops: off}}\n")
    result = CliRunner().invoke(main, ["check", "--json", "--config", str(config)])
    assert json.loads(result.stdout)["drop_reasons"] == "not counted: attach.probes.packet_drops: off"


def test_failure_reasons_say_where_icmp_errors_come_from(report, tmp_path):
    trial = next(p for p in report["probes"] if p["probe"] == "tcp_icmp_errors")
    assert trial["flavour"], trial
    assert f"ICMP errors this host sends (tcp_icmp_errors: {trial['flavour']})" in report["failure_reasons"]
    config = tmp_path / "off.yaml"
    config.write_text("attach: {probes: {tcp_icmp_errors: off}}\n")
    result = CliRunner().invoke(main, ["check", "--json", "--config", str(config)])
    assert json.loads(result.stdout)["failure_reasons"].endswith(
        "counts as aborted: attach.probes.tcp_icmp_errors: off")
