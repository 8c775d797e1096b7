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


def disasm_lines(probe: str, *options: str) -> list[str]:
    result = CliRunner().invoke(main, ["disasm", probe, "--mode", "raw_tracepoint", *options])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


@pytest.mark.parametrize("probe", ["tcp_states", "tcp_lifecycle"])
def test_disasm_in_llvm_syntax_is_the_default_and_is_the_assembled_bytecode(probe):
    import asm
    from gespann.probes import find_probe

    found = find_probe(probe)
    flavour = found.flavour("raw_tracepoint")
    program = found.program(flavour)
    expected = [f"; {probe} as {flavour}",
                *asm.disassemble(program.assemble(maps={name: 0 for name in program.map_names})).splitlines()]
    assert disasm_lines(probe) == expected
    assert disasm_lines(probe, "--syntax", "llvm") == expected


@pytest.mark.parametrize("probe", ["tcp_states", "tcp_lifecycle"])
def test_disasm_in_dsl_syntax_names_labels_maps_and_helpers_where_llvm_syntax_has_numbers(probe):
    """Line by line against the llvm listing: a helper's name is its id, a map load an fd-0 load, a label the
    slot the jump's offset reaches; everything else is the same text."""
    import asm

    llvm = disasm_lines(probe)[1:]
    dsl_lines = disasm_lines(probe, "--syntax", "dsl")[1:]
    labels: dict[str, int] = {}
    instructions: list[str] = []
    slot_of: list[int] = []
    slot = 0
    for line in dsl_lines:
        if not line.startswith("\t"):
            labels[line.rstrip(":")] = slot
            continue
        instructions.append(line.strip())
        slot_of.append(slot)
        slot += 2 if "= map[" in line or line.endswith(" ll") or line.strip().startswith("ld_pseudo") else 1
    assert len(instructions) == len(llvm)
    named = {"helper": 0, "map": 0, "label": 0}
    for at, dsl, plain in zip(slot_of, instructions, llvm):
        if dsl.startswith("call bpf_"):
            assert plain == f"call {asm.HELPERS[dsl[len('call bpf_'):]]:#x}", (dsl, plain)
            named["helper"] += 1
        elif "= map[" in dsl:
            register = dsl.split(" = ")[0]
            assert plain == f"ld_pseudo {register}, 0x1, 0x0", (dsl, plain)
            named["map"] += 1
        elif "goto " in dsl and not dsl.split("goto ")[1].startswith(("+", "-")):
            prefix, label = dsl.split("goto ")
            before, offset = plain.split("goto ")
            assert before == prefix and labels[label] == at + 1 + int(offset, 16), (dsl, plain)
            named["label"] += 1
        else:
            assert dsl == plain
    assert all(named.values()), named
    assert "call bpf_map_lookup_elem" in instructions
