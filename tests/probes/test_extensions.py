"""Probes from outside gespann's tree: loaded from a file or a module named in the config, or refused
with a message that says which and why."""
from __future__ import annotations

from pathlib import Path

import pytest
from probe_flavours import FLAVOURS

from gespann.probes import ExtensionError, Probe, load_probes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "probes" / "tcp_connects_by_port.py"


def test_the_example_is_one_probe_with_its_metric_and_reader():
    (probe,) = load_probes(str(EXAMPLE))
    assert isinstance(probe, Probe) and probe.name == "tcp_connects_by_port"
    assert [spec.name for spec in probe.metrics] == ["tcp_connects_by_remote_port_total"]
    assert probe.reader is not None


def test_loading_a_file_twice_gives_the_same_probe():
    assert load_probes(str(EXAMPLE))[0] is load_probes(str(EXAMPLE))[0]


def test_a_module_name_is_imported(tmp_path, monkeypatch):
    (tmp_path / "my_gespann_probes.py").write_text(EXAMPLE.read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    (probe,) = load_probes("my_gespann_probes")
    assert probe.name == "tcp_connects_by_port"


def test_probes_lists_several(tmp_path):
    source = tmp_path / "two.py"
    source.write_text(f"import runpy\nPROBE_A = runpy.run_path({str(EXAMPLE)!r})['PROBE']\n"
                      "import dataclasses\nPROBES = (PROBE_A, dataclasses.replace(PROBE_A, name='second'))\n")
    assert [probe.name for probe in load_probes(str(source))] == ["tcp_connects_by_port", "second"]


@pytest.mark.parametrize("text, why", [
    ("X = 1\n", "declares no probe: define PROBE"),
    ("PROBE = 'not a probe'\n", "is not a gespann.probes.Probe"),
    ("raise RuntimeError('broken on purpose')\n", "failed to load: RuntimeError: broken on purpose"),
    ("def oops(:\n", "failed to load: SyntaxError"),
])
def test_a_bad_file_is_refused_with_the_reason(tmp_path, text, why):
    source = tmp_path / "bad_probe.py"
    source.write_text(text)
    with pytest.raises(ExtensionError, match=why.replace("(", r"\(")):
        load_probes(str(source))


def test_a_missing_file_or_module_is_named():
    with pytest.raises(ExtensionError, match="no such file"):
        load_probes("/nonexistent/probe.py")
    with pytest.raises(ExtensionError, match="module no_such_gespann_module failed to load: ModuleNotFoundError"):
        load_probes("no_such_gespann_module")


# --- the config: extra_probes ---------------------------------------------------------------------------

def test_the_config_names_an_extra_probe_that_does_not_load(tmp_path):
    from gespann.config import ConfigError, parse

    with pytest.raises(ConfigError, match=r"^extra_probes\[1\]: .*none\.py: no such file"):
        parse({"extra_probes": [str(EXAMPLE), str(tmp_path / "none.py")]})
    with pytest.raises(ConfigError, match=r"^extra_probes\[0\]: .*a Python file"):
        parse({"extra_probes": [7]})


def test_an_extra_probe_may_not_take_a_name_or_a_metric_already_there(tmp_path):
    from gespann.config import ConfigError, parse

    clash = tmp_path / "clash.py"
    clash.write_text("from gespann.probes.tcp.lifecycle import PROBE\n")
    with pytest.raises(ConfigError, match="a probe called tcp_lifecycle is already there"):
        parse({"extra_probes": [str(clash)]})
    unlike = tmp_path / "unlike.py"
    unlike.write_text(f"import dataclasses, runpy\nfrom gespann.figures import counter\n"
                      f"probe = runpy.run_path({str(EXAMPLE)!r})['PROBE']\n"
                      f"PROBE = dataclasses.replace(probe, metrics=(counter('bytes_total', (), 'mine'),))\n")
    with pytest.raises(ConfigError, match="^extra_probes: probe tcp_connects_by_port declares metric bytes_total"):
        parse({"extra_probes": [str(unlike)]})


def test_attach_probes_may_force_an_extra_probes_flavour():
    from gespann.config import parse

    config = parse({"extra_probes": [str(EXAMPLE)], "attach": {"probes": {"tcp_connects_by_port": "tracepoint"}}})
    assert config.probe_modes == {"tcp_connects_by_port": "tracepoint"}


def test_the_cli_disassembles_an_extra_probe_and_refuses_a_bad_one(tmp_path):
    import subprocess
    import sys

    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(f"extra_probes: [{EXAMPLE}]\n")
    bad.write_text("extra_probes: [/nonexistent/probe.py]\n")
    shown = subprocess.run([sys.executable, "-m", "gespann", "disasm", "tcp_connects_by_port", "--mode", "tracepoint",
                            "--config", str(good)], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("; tcp_connects_by_port as tracepoint") and "call" in shown.stdout
    refused = subprocess.run([sys.executable, "-m", "gespann", "disasm", "tcp_connects_by_port", "--config", str(bad)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "extra_probes[0]: /nonexistent/probe.py: no such file" in refused.stderr

# --- in the kernel: the example probe beside gespann's own, against the kernel's own count ---------------


def _connect_to(ports: dict[int, int], traffics) -> None:
    """`ports[port]` connections to each listener, each exchanging a byte and closed."""
    for traffic in traffics:
        for _ in range(ports[traffic.port]):
            traffic.exchange(1, 1)


@pytest.mark.root
@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_an_extra_probe_counts_exactly_beside_gespanns_own(namespace, mode, perf_event_link, needed):
    import mib
    from kernel_features import require
    from loopback import wait_for
    from tcp_traffic import TcpTraffic

    from gespann.collector.collector import KernelCollector
    from gespann.config import parse
    from gespann.figures import labels
    from gespann.probes import ProbeSet

    require(*(feature() for feature in needed))
    config = parse({"extra_probes": [str(EXAMPLE)], "scope": {"netns": namespace.path, "protocols": ["tcp"]},
                    "attach": {"probes": {"tcp_connects_by_port": mode}, "perf_event": perf_event_link}})
    with ProbeSet.attach_all(config) as probes, KernelCollector(probes, namespace.path) as collector:
        assert probes["tcp_connects_by_port"].flavour.mode == mode and "tcp_lifecycle" in probes.probes
        with namespace.enter():
            before = mib.tcp("ActiveOpens")
            traffics = [TcpTraffic(), TcpTraffic()]
            wanted = {traffics[0].port: 3, traffics[1].port: 2}
            _connect_to(wanted, traffics)
            opened = mib.tcp("ActiveOpens") - before
            for traffic in traffics:
                traffic.close()
        assert opened == 5
        expected = {labels(remote_port=str(port)): n for port, n in wanted.items()}
        wait_for(lambda: collector.snapshot()["connections_closed_total"].value(protocol="tcp", role="client")
                 == opened)
        snapshot = collector.snapshot()
        assert dict(snapshot["tcp_connects_by_remote_port_total"].series) == expected
        assert snapshot["connections_opened_total"].value(protocol="tcp", role="client") == opened
        assert snapshot["probe_info"].value(probe="tcp_connects_by_port", mode=probes["tcp_connects_by_port"]
                                            .flavour.mode) == 1


@pytest.mark.root
def test_ports_past_the_extra_probes_capacity_count_as_other(namespace):
    import dataclasses
    import runpy

    from tcp_traffic import TcpTraffic

    from gespann.collector.collector import KernelCollector
    from gespann.figures import labels
    from gespann.probes import AttachSettings, ProbeSet
    from gespann.probes.authoring import U32, capped_count_maps

    example = runpy.run_path(str(EXAMPLE))
    small = dataclasses.replace(example["PROBE"], maps=capped_count_maps(example["PORTS"], example["OVERFLOW"], U32, 2,
                                                                           "conn_port"))
    with ProbeSet.attach([small], AttachSettings(netns=namespace.inode)) as probes, \
            KernelCollector(probes, namespace.path) as collector:
        with namespace.enter():
            traffics = [TcpTraffic() for _ in range(4)]
            wanted = {traffic.port: 1 + index for index, traffic in enumerate(traffics)}
            _connect_to(wanted, traffics)
            for traffic in traffics:
                traffic.close()
        series = dict(collector.snapshot()["tcp_connects_by_remote_port_total"].series)
    other = series.pop(labels(remote_port="other"))
    assert len(series) == 2, "the two ports the map holds"
    for port_labels, count in series.items():
        assert wanted[int(dict(port_labels)["remote_port"])] == count
    assert other + sum(series.values()) == sum(wanted.values()), "nothing lost: the rest counts as other"
