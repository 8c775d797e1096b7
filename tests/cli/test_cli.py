"""The command line as a user meets it: help, one-line errors, exit statuses."""
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gespann.cli import main


def test_every_command_has_help():
    runner = CliRunner()
    for args in ([], ["run"], ["probes"], ["disasm"], ["btf"], ["btf", "offsetof"]):
        result = runner.invoke(main, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


@pytest.mark.parametrize("text, key", [
    ("exporters: [{type: graphite}]\n", "exporters[0].type"),
    ("adapters: [{type: graphite}]\n", "adapters[0].type"),
    ("exporters: [{type: prometheus, settings: {port: '99999'}}]\n", "exporters[0].settings.port"),
    ("exporters: []\nadapters: []\n", "exporters"),
    ("colour: blue\n", "colour"),
    ("log_level: [info]\n", "log_level"),
    ("attach: {probes: {udp_send: kprobe}}\n", "attach.probes.udp_send"),
    ("attach: {probes: {tcp_lifecyle: tp_btf}}\n", "attach.probes.tcp_lifecyle"),
])
@pytest.mark.parametrize("command", ["run", "probes", "check", "trace"])
def test_bad_config_is_one_line_and_status_2(tmp_path, text, key, command):
    path = tmp_path / "gespann.yaml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "gespann", command, "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gespann: config: {key}: ")


def test_an_unknown_exporter_type_names_the_key_and_the_types(tmp_path):
    path = tmp_path / "gespann.yaml"
    path.write_text("exporters:\n  - type: prometheus\n  - type: graphite\n")
    result = subprocess.run([sys.executable, "-m", "gespann", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("gespann: config: exporters[1].type: unknown exporter type 'graphite'; "
                             "expected one of: prometheus, datadog, jsonl\n")


def test_unreadable_config_is_status_2(tmp_path):
    result = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "cannot read config file" in result.output


def test_unknown_probe_is_a_usage_error():
    result = CliRunner().invoke(main, ["disasm", "no_such_probe"])
    assert result.exit_code == 2
    assert "gespann probes" in result.output
