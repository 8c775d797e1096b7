"""Config parsing: the original format is accepted (adapters: with a warning), every mistake names its key."""
import pytest

from gespann.config import Config, ConfigError, ExporterConfig, load, parse

ORIGINAL = """
log_level: info
adapters:
  - type: prometheus
    settings: {port: "8080"}
  - type: datadog
    settings: {host: "localhost:8125"}
"""


def test_original_format_is_accepted_with_adapters_as_the_older_name(tmp_path):
    path = tmp_path / "gespann.yaml"
    path.write_text(ORIGINAL)
    config = load(path)
    assert config.log_level == "info"
    assert config.exporters == (
        ExporterConfig("prometheus", {"port": 8080, "address": "0.0.0.0", "path": "/metrics", "max_connections": 128}),
        ExporterConfig("datadog", {"host": "localhost:8125", "prefix": "gespann", "tags": (), "flush_interval": 10.0}),
    )
    assert config.deprecations == ("config: adapters is the older name of exporters; rename the key to exporters",)
    path.write_text(ORIGINAL.replace("adapters:", "exporters:"))
    assert load(path) == config and load(path).deprecations == ()


def test_both_names_of_the_exporters_list_is_an_error_naming_both():
    for exporters, adapters in (([], []), ([{"type": "prometheus"}], [{"type": "jsonl"}])):
        with pytest.raises(ConfigError) as err:
            parse({"exporters": exporters, "adapters": adapters})
        assert err.value.key == "exporters" and "adapters" in err.value.problem
    assert parse({"exporters": None, "adapters": [{"type": "jsonl", "settings": {"path": "x"}}]}).deprecations


def test_datadog_settings():
    config = parse({"exporters": [{"type": "datadog", "settings": {"tags": {"env": "prod"}, "flush_interval": 2}}]})
    assert config.exporters[0].settings == {"tags": ["env:prod"], "flush_interval": 2.0, "prefix": "gespann"}


def test_defaults_without_a_file():
    assert load(None) == Config()
    assert load(None).exporters[0].settings["port"] == 8080


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load(path) == Config()


def test_gespann_keys(tmp_path):
    config = parse({"events": {"reader": "perf"}, "attach": {"perf_event": "ioctl"}, "btf": {"source": "vendored"}})
    assert (config.event_reader, config.perf_event_attach, config.btf_source) == ("perf", "ioctl", "vendored")
    assert parse({}).ringbuf_bytes == 4 << 20
    assert parse({"events": {"ringbuf_bytes": 1 << 16}}).ringbuf_bytes == 1 << 16
    table = tmp_path / "6.1.0-56-amd64.json"
    table.write_text("{}")
    assert parse({"btf": {"source": str(table)}}).btf_source == str(table)
    assert parse({"scope": {"netns": "/proc/self/ns/net"}}).netns == "/proc/self/ns/net"
    assert parse({}).protocols == ("tcp", "udp")
    assert parse({"scope": {"protocols": ["udp", "tcp", "udp"]}}).protocols == ("tcp", "udp")
    assert parse({"scope": {"protocols": ["tcp"]}}).protocols == ("tcp",)
    forced = parse({"attach": {"mode": "tracepoint",
                               "probes": {"tcp_lifecycle": "raw_tracepoint", "udp_send": "auto"}}})
    assert (forced.attach_mode, forced.probe_modes) == ("tracepoint", {"tcp_lifecycle": "raw_tracepoint",
                                                                       "udp_send": "auto"})
    assert parse({"attach": None, "scope": {"protocols": None}, "exporters": None}) == Config()
    assert parse({"attach": None, "scope": {"protocols": None}, "adapters": None}).deprecations == ()
    limits = parse({"limits": {"tcp_connections": 8, "udp_flows": 1 << 20}}).map_capacities
    assert limits == {"tcp_connections": 8, "udp_flows": 1 << 20}
    assert parse({"limits": {"udp_flows": None}}).map_capacities == {}
    peers = parse({"labels": {"peers": True, "networks": {"pods": ["10.0.0.0/8", "fd00::/8"], "lb": ["192.0.2.7"]}},
                   "limits": {"tcp_peers": 50}})
    assert (peers.label_peers, peers.map_capacities) == (True, {"tcp_peers": 50})
    assert peers.label_networks == (("pods", ("10.0.0.0/8", "fd00::/8")), ("lb", ("192.0.2.7",)))
    assert (Config().label_peers, Config().label_networks) == (False, ())


@pytest.mark.parametrize("document, key, words", [
    ({"exporters": [{"type": "graphite"}]}, "exporters[0].type",
     "unknown exporter type 'graphite'; expected one of: prometheus, datadog, jsonl"),
    ({"adapters": [{"type": "graphite"}]}, "adapters[0].type", "unknown exporter type 'graphite'"),
    ({"exporters": [{"type": ["jsonl"]}]}, "exporters[0].type", "unknown exporter type ['jsonl']"),
    ({"exporters": [{"type": "prometheus", "settings": {"file": "x"}}]}, "exporters[0].settings.file",
     "unknown key; expected one of: port, address, path"),
    ({"exporters": [{"type": "jsonl", "settings": ["x"]}]}, "exporters[0].settings", "expected a mapping"),
    ({"exporters": [{"type": "datadog", "settings": {"prefix": 5}}]}, "exporters[0].settings.prefix",
     "a metric name prefix"),
    ({"exporters": [{"type": "prometheus", "settings": {"port": "80x"}}]}, "exporters[0].settings.port",
     "expected a port number"),
    ({"exporters": [{"type": "prometheus", "settings": {"port": 70000}}]}, "exporters[0].settings.port",
     "between 1 and 65535"),
    ({"exporters": [{"type": "datadog", "settings": {"host": "nohost"}}]}, "exporters[0].settings.host",
     "host:port"),
    ({"exporters": [{"settings": {}}]}, "exporters[0].type", "missing"),
    ({"exporters": [{"type": "datadog", "settings": {"tags": "env:prod"}}]}, "exporters[0].settings.tags",
     "list of 'key:value' strings"),
    ({"exporters": [{"type": "datadog", "settings": {"flush_interval": 0}}]}, "exporters[0].settings.flush_interval",
     "positive number of seconds"),
    ({"exporters": {"type": "prometheus"}}, "exporters", "expected a list"),
    ({"adapters": {"type": "prometheus"}}, "adapters", "expected a list"),
    ({"log_lvl": "info"}, "log_lvl", "unknown key"),
    ({"log_level": "loud"}, "log_level", "unknown value 'loud'"),
    ({"log_level": 3}, "log_level", "unknown value 3"),
    ({"events": {"reader": "fast"}}, "events.reader", "ringbuf"),
    ({"events": {"size": 1}}, "events.size", "unknown key"),
    ({"attach": "link"}, "attach", "expected a mapping"),
    ({"attach": {"mode": "uprobe"}}, "attach.mode", "unknown attach mode 'uprobe'"),
    ({"attach": {"probes": {"tcp_lifecycle": "ebpf"}}}, "attach.probes.tcp_lifecycle",
     "probe tcp_lifecycle has no 'ebpf' flavour; its flavours are: auto, tp_btf, raw_tracepoint, tracepoint, "
     "fentry, kprobe"),
    ({"attach": {"probes": {"udp_send": "kprobe"}}}, "attach.probes.udp_send",
     "probe udp_send has no 'kprobe' flavour; its flavours are: auto, tp_btf, raw_tracepoint, tracepoint"),
    ({"attach": {"probes": {"tcp_lifecyle": "tp_btf"}}}, "attach.probes.tcp_lifecyle",
     "no probe is called 'tcp_lifecyle'; the probes are: tcp_lifecycle, tcp_reset_sent, tcp_reset_received, "
     "tcp_icmp_errors, tcp_unseen_ends, udp_send, udp_receive"),
    ({"attach": {"probes": {"tcp_states": "tp_btf"}}}, "attach.probes.tcp_states", "no probe is called"),
    ({"attach": {"probes": {3: "tp_btf"}}}, "attach.probes.3", "no probe is called 3"),
    ({"attach": {"probes": {"udp_send": "tp_btf"}}, "scope": {"protocols": ["tcp"]}}, "attach.probes.udp_send",
     "probe udp_send watches udp, which scope.protocols leaves out"),
    ({"attach": {"probes": ["tcp_lifecycle"]}}, "attach.probes", "a mapping of probe name to attach mode"),
    ({"attach": False}, "attach", "expected a mapping"),
    ({"labels": 0}, "labels", "expected a mapping"),
    ({"btf": {"source": "mine"}}, "btf.source", "file path"),
    ({"btf": {"source": "/nonexistent/vmlinux.btf"}}, "btf.source", "No such file"),
    ({"scope": {"netns": "/proc/self/ns/\x00net"}}, "scope.netns", "embedded null"),
    ({"connections": {"idle_timeout": float("nan")}}, "connections.idle_timeout", "positive number of seconds"),
    ({"connections": {"idle_timeout": float("inf")}}, "connections.idle_timeout", "positive number of seconds"),
    ({"exporters": [{"type": "prometheus", "settings": {"port": float("inf")}}]}, "exporters[0].settings.port",
     "expected a port number"),
    ({"exporters": [{"type": "prometheus", "settings": {"port": 8080.5}}]}, "exporters[0].settings.port",
     "expected a port number"),
    ({"exporters": [{"type": "prometheus", "settings": {"address": 10}}]}, "exporters[0].settings.address",
     "an address to listen on"),
    ({"exporters": [{"type": "jsonl", "settings": {"path": "a\nb"}}]}, "exporters[0].settings.path", "a file path"),
    ({"log_level\nx": 1}, "'log_level\\nx'", "unknown key"),
    ({"scope": {"netns": "/nonexistent/ns/net"}}, "scope.netns", "No such file"),
    ({"scope": {"netns": 4026531840}}, "scope.netns", "namespace file path"),
    ({"scope": {"pid": 1}}, "scope.pid", "unknown key"),
    ({"scope": {"protocols": "tcp"}}, "scope.protocols", "a list of protocols (tcp, udp)"),
    ({"scope": {"protocols": []}}, "scope.protocols", "watch at least one protocol"),
    ({"scope": {"protocols": ["tcp", "sctp"]}}, "scope.protocols[1]", "unknown protocol 'sctp'"),
    ({"exporters": [{"type": "jsonl", "settings": {}}]}, "exporters[0].settings.path", "missing"),
    ({"connections": {"idle_timeout": "1m"}}, "connections.idle_timeout", "positive number of seconds"),
    ({"connections": {"udp_flow_timeout": -1}}, "connections.udp_flow_timeout", "positive number of seconds"),
    ({"connections": {"idle": 5}}, "connections.idle", "unknown key"),
    ({"labels": {"process": "yes"}}, "labels.process", "true or false"),
    ({"labels": {"max_series": 0}}, "labels.max_series", "at least 1"),
    ({"labels": {"pid": True}}, "labels.pid", "unknown key"),
    ({"limits": {"tcp_connections": 0}}, "limits.tcp_connections", "at least 1"),
    ({"limits": {"udp_flows": "lots"}}, "limits.udp_flows", "at least 1"),
    ({"limits": {"udp_flows": 1 << 30}}, "limits.udp_flows", "at most 16777216 entries"),
    ({"limits": {"records": 5}}, "limits.records", "unknown key; expected one of: tcp_connections, udp_flows"),
    ({"limits": {"tcp_peers": 0}}, "limits.tcp_peers", "at least 1"),
    ({"labels": {"peers": "on"}}, "labels.peers", "true or false"),
    ({"labels": {"networks": ["10.0.0.0/8"]}}, "labels.networks", "a mapping of network name to a list of CIDRs"),
    ({"labels": {"networks": {"pods": "10.0.0.0/8"}}}, "labels.networks.pods", "a list of CIDRs"),
    ({"labels": {"networks": {"pods": []}}}, "labels.networks.pods", "at least one CIDR"),
    ({"labels": {"networks": {"pods": ["10.0.0.0/33"]}}}, "labels.networks.pods[0]", "expected a CIDR"),
    ({"labels": {"networks": {"pods": [8]}}}, "labels.networks.pods[0]", "expected a CIDR"),
    ({"labels": {"networks": {7: ["10.0.0.0/8"]}}}, "labels.networks.7", "non-empty string"),
    (["log_level"], "(top level)", "expected a mapping"),
    ({"events": {"ringbuf_bytes": 3 << 20}}, "events.ringbuf_bytes", "a power of two from 4096 to 1073741824"),
    ({"events": {"ringbuf_bytes": 2048}}, "events.ringbuf_bytes", "a power of two from 4096"),
    ({"events": {"ringbuf_bytes": "4MiB"}}, "events.ringbuf_bytes", "at least 1"),
])
def test_bad_config_names_the_key(document, key, words):
    with pytest.raises(ConfigError) as err:
        parse(document)
    assert err.value.key == key
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_a_long_value_is_cut_in_the_error():
    with pytest.raises(ConfigError) as err:
        parse({"log_level": "x" * 500})
    assert len(str(err.value)) < 200 and "..." in str(err.value)


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(tmp_path / "absent.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("log_level: info\nexporters: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(path)
