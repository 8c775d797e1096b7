"""Property: whatever a config file holds, loading it gives a valid Config or one ConfigError line.

Random YAML trees are generated under every key gespann knows, with values
that are right, nearly right and wrong (other types, NaN, huge numbers,
control characters, unknown keys), and as raw text. No other exception may
escape the loader: the CLI turns exactly ConfigError into one line and exit 2.
"""
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gespann import config
from gespann.config import Config, ConfigError, load
from gespann.exporters import KINDS
from gespann.probes import ALL_PROBES

#: Strings gespann gives meaning to somewhere, so that valid documents come up often.
WORDS = sorted({
    *config.LOG_LEVELS, *KINDS, *config.EVENT_READERS, *config.PERF_EVENT_ATTACH,
    *config.ATTACH_MODES, *config.BTF_SOURCES, *config.PROTOCOLS, *(probe.name for probe in ALL_PROBES),
    "/proc/self/ns/net", "/proc/1/ns/net", "/nonexistent", "localhost:8125", "host:", ":99", "8080", "/metrics",
    "0.0.0.0", "::", "/tmp/gespann.jsonl", "env:prod",
})

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-2**70, max_value=2**70), st.integers(min_value=0, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(WORDS),
)
trees = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(WORDS), st.text(max_size=8), st.integers()), inner, max_size=4),
), max_leaves=12)


def section(keys):
    """A mapping over some of `keys` (and now and then an unknown one), each with a random tree."""
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=6)), trees, max_size=len(keys) + 1)


exporter_settings = section(sorted({setting.name for name in KINDS for setting in KINDS[name].settings}))
exporter = st.fixed_dictionaries({}, optional={"type": st.one_of(st.sampled_from(list(KINDS)), trees),
                                               "settings": st.one_of(exporter_settings, trees)})
probe_modes = st.dictionaries(st.one_of(st.sampled_from([p.name for p in ALL_PROBES]), st.text(max_size=12)),
                              st.one_of(st.sampled_from(config.ATTACH_MODES), trees), max_size=3)
documents = st.fixed_dictionaries({}, optional={
    "log_level": st.one_of(st.sampled_from(config.LOG_LEVELS), trees),
    "exporters": st.one_of(st.lists(st.one_of(exporter, trees), max_size=3), trees),
    "adapters": st.one_of(st.lists(st.one_of(exporter, trees), max_size=3), trees),
    "events": st.one_of(section(["reader"]), trees),
    "attach": st.one_of(st.fixed_dictionaries({}, optional={
        "mode": st.one_of(st.sampled_from(config.ATTACH_MODES), trees),
        "probes": st.one_of(probe_modes, trees),
        "perf_event": st.one_of(st.sampled_from(config.PERF_EVENT_ATTACH), trees)}), trees),
    "btf": st.one_of(section(["source"]), trees),
    "scope": st.one_of(st.fixed_dictionaries({}, optional={
        "netns": st.one_of(st.sampled_from(["/proc/self/ns/net", "/nonexistent", "rel/ns"]), trees),
        "protocols": st.one_of(st.lists(st.sampled_from(config.PROTOCOLS + ("sctp",)), max_size=3), trees)}), trees),
    "connections": st.one_of(section(["idle_timeout", "udp_flow_timeout"]), trees),
    "labels": st.one_of(section(["process", "container", "max_series"]), trees),
    "limits": st.one_of(section(list(config.LIMITS)), trees),
    "colour": trees,
}) | trees


def outcome(path) -> object:
    """The loader's result: a Config, or the ConfigError's message, which must be one line."""
    try:
        return load(path)
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message and "\r" not in message, repr(message)
        assert message.startswith(f"{err.key}: ")
        return message


def sane(loaded: Config) -> None:
    """What a valid Config promises the rest of gespann."""
    assert loaded.log_level in config.LOG_LEVELS
    assert all(e.type in KINDS for e in loaded.exporters)
    assert all(0 < t < math.inf for t in (loaded.idle_timeout, loaded.udp_flow_timeout))
    assert loaded.protocols and set(loaded.protocols) <= set(config.PROTOCOLS)
    assert isinstance(loaded.label_max_series, int) and loaded.label_max_series >= 1
    assert all(name in config.LIMITS and 1 <= n <= config.MAX_CAPACITY for name, n in loaded.map_capacities.items())
    names = {probe.name: probe for probe in ALL_PROBES}
    for name, mode in loaded.probe_modes.items():
        assert mode == "auto" or mode in {f.mode for f in names[name].flavours}
    for e in loaded.exporters:
        assert set(e.settings) <= {setting.name for setting in KINDS[e.type].settings}
        if e.type == "prometheus":
            assert 1 <= e.settings["port"] <= 65535


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])


@SETTINGS
@given(document=documents)
def test_any_tree_under_the_known_keys_is_a_config_or_one_line(document, tmp_path):
    path = tmp_path / "gespann.yaml"
    path.write_text(yaml.safe_dump(document))
    result = outcome(path)
    if isinstance(result, Config):
        sane(result)


@SETTINGS
@given(text=st.text(max_size=200) | st.sampled_from([
    "a: &x [*x]\n", "log_level: !!python/object:os.system x\n", "log_level: !!binary aGk=\n",
    "? [a, b]\n: c\n", "adapters: [{type: prometheus, settings: {port: 1e400}}]\n", "\x00", "---\n---\n",
    "[" * 2000 + "]" * 2000, "{a: " * 2000 + "1" + "}" * 2000, "a: " + "[" * 60 + "]" * 60,
]))
def test_any_text_is_a_config_or_one_line(text, tmp_path):
    path = tmp_path / "gespann.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    result = outcome(path)
    if isinstance(result, Config):
        sane(result)


def test_undecodable_bytes_are_one_line(tmp_path):
    path = tmp_path / "gespann.yaml"
    path.write_bytes(b"log_level: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid UTF-8 at byte 11"):
        load(path)
