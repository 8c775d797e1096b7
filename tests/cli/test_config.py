"""Config parsing: the original format is accepted unchanged, every mistake names its key."""
import pytest

from gespann.config import Adapter, Config, ConfigError, load, parse

ORIGINAL = """
log_level: info
adapters:
  - type: prometheus
    settings: {port: "8080"}
  - type: datadog
    settings: {host: "localhost:8125"}
"""


def test_original_format_is_accepted_unchanged(tmp_path):
    path = tmp_path / "gespann.yaml"
    path.write_text(ORIGINAL)
    config = load(path)
    assert config.log_level == "info"
    assert config.adapters == (
        Adapter("prometheus", {"port": 8080}),
        Adapter("datadog", {"host": "localhost:8125"}),
    )


def test_datadog_settings():
    config = parse({"adapters": [{"type": "datadog", "settings": {"tags": {"env": "prod"}, "flush_interval": 2.5}}]})
    assert config.adapters[0].settings == {"tags": {"env": "prod"}, "flush_interval": 2.5}


def test_defaults_without_a_file():
    assert load(None) == Config()
    assert load(None).adapters[0].settings["port"] == 8080


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load(path) == Config()


def test_gespann_keys():
    config = parse({"events": {"reader": "perf"}, "attach": {"perf_event": "ioctl"}, "btf": {"source": "vendored"}})
    assert (config.event_reader, config.perf_event_attach, config.btf_source) == ("perf", "ioctl", "vendored")
    assert parse({"btf": {"source": "/boot/vmlinux"}}).btf_source == "/boot/vmlinux"
    assert parse({"scope": {"netns": "/proc/self/ns/net"}}).netns == "/proc/self/ns/net"
    assert parse({}).protocols == ("tcp", "udp")
    assert parse({"scope": {"protocols": ["udp", "tcp", "udp"]}}).protocols == ("tcp", "udp")
    assert parse({"scope": {"protocols": ["tcp"]}}).protocols == ("tcp",)
    forced = parse({"attach": {"mode": "tracepoint", "probes": {"tcp_states": "raw_tracepoint"}}})
    assert (forced.attach_mode, forced.probe_modes) == ("tracepoint", {"tcp_states": "raw_tracepoint"})


@pytest.mark.parametrize("document, key, words", [
    ({"adapters": [{"type": "graphite"}]}, "adapters[0].type", "unknown adapter type 'graphite'"),
    ({"adapters": [{"type": "prometheus", "settings": {"port": "80x"}}]}, "adapters[0].settings.port",
     "expected a port number"),
    ({"adapters": [{"type": "prometheus", "settings": {"port": 70000}}]}, "adapters[0].settings.port",
     "between 1 and 65535"),
    ({"adapters": [{"type": "datadog", "settings": {"host": "nohost"}}]}, "adapters[0].settings.host",
     "host:port"),
    ({"adapters": [{"settings": {}}]}, "adapters[0].type", "missing"),
    ({"adapters": [{"type": "datadog", "settings": {"tags": "env:prod"}}]}, "adapters[0].settings.tags",
     "list of 'key:value' strings"),
    ({"adapters": [{"type": "datadog", "settings": {"flush_interval": 0}}]}, "adapters[0].settings.flush_interval",
     "positive number of seconds"),
    ({"adapters": {"type": "prometheus"}}, "adapters", "expected a list"),
    ({"log_lvl": "info"}, "log_lvl", "unknown key"),
    ({"log_level": "loud"}, "log_level", "unknown value 'loud'"),
    ({"log_level": 3}, "log_level", "unknown value 3"),
    ({"events": {"reader": "fast"}}, "events.reader", "ringbuf"),
    ({"events": {"size": 1}}, "events.size", "unknown key"),
    ({"attach": "link"}, "attach", "expected a mapping"),
    ({"attach": {"mode": "uprobe"}}, "attach.mode", "unknown attach mode 'uprobe'"),
    ({"attach": {"probes": {"tcp_states": "ebpf"}}}, "attach.probes.tcp_states", "unknown attach mode"),
    ({"btf": {"source": "mine"}}, "btf.source", "file path"),
    ({"scope": {"netns": "/nonexistent/ns/net"}}, "scope.netns", "No such file"),
    ({"scope": {"netns": 4026531840}}, "scope.netns", "namespace file path"),
    ({"scope": {"pid": 1}}, "scope.pid", "unknown key"),
    ({"scope": {"protocols": "tcp"}}, "scope.protocols", "a list of protocols (tcp, udp)"),
    ({"scope": {"protocols": []}}, "scope.protocols", "watch at least one protocol"),
    ({"scope": {"protocols": ["tcp", "sctp"]}}, "scope.protocols[1]", "unknown protocol 'sctp'"),
    ({"adapters": [{"type": "jsonl", "settings": {}}]}, "adapters[0].settings.path", "missing"),
    ({"connections": {"idle_timeout": "1m"}}, "connections.idle_timeout", "positive number of seconds"),
    ({"connections": {"udp_flow_timeout": -1}}, "connections.udp_flow_timeout", "positive number of seconds"),
    ({"connections": {"idle": 5}}, "connections.idle", "unknown key"),
    ({"labels": {"process": "yes"}}, "labels.process", "true or false"),
    ({"labels": {"max_series": 0}}, "labels.max_series", "at least 1"),
    ({"labels": {"pid": True}}, "labels.pid", "unknown key"),
    (["log_level"], "(top level)", "expected a mapping"),
])
def test_bad_config_names_the_key(document, key, words):
    with pytest.raises(ConfigError) as err:
        parse(document)
    assert err.value.key == key
    assert words in str(err.value)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "absent.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("log_level: info\nadapters: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(path)
