"""One table of attach modes (gespann/probes/toolkit/flavours.py): the config's choices and every probe's order
follow it."""
import pytest

from gespann import config
from gespann.probes import ALL_PROBES
from gespann.probes.toolkit.flavours import (
    ATTACH_MODES,
    MODES,
    BtfTracepoint,
    Fentry,
    Flavour,
    Kprobe,
    RawTracepoint,
    Tracepoint,
)
from gespann.settings import ConfigError


def test_the_config_accepts_auto_and_every_mode_of_the_table_in_its_order():
    assert config.ATTACH_MODES == ("auto", *(mode.name for mode in ATTACH_MODES))
    for mode in MODES:
        assert config.parse({"attach": {"mode": mode}}).attach_mode == mode
    with pytest.raises(ConfigError, match="expected one of: auto, " + ", ".join(MODES) + "$"):
        config.parse({"attach": {"mode": "uprobe"}})


@pytest.mark.parametrize("flavour", [Tracepoint, RawTracepoint, BtfTracepoint, Fentry, Kprobe])
def test_each_flavour_is_a_mode_of_the_table_with_its_kind_of_pointers(flavour: type[Flavour]):
    info = {mode.name: mode for mode in ATTACH_MODES}[flavour.mode]
    assert flavour.btf_pointers is info.btf_pointers


def test_every_flavour_class_has_a_row():
    assert {cls.mode for cls in (Tracepoint, RawTracepoint, BtfTracepoint, Fentry, Kprobe)} == set(MODES)


@pytest.mark.parametrize("probe", ALL_PROBES, ids=lambda probe: probe.name)
def test_each_probe_lists_its_flavours_in_the_tables_order(probe):
    modes = [flavour.mode for flavour in probe.flavours]
    assert modes == sorted(modes, key=MODES.index)
