"""`gespann check`'s text: the probe column is as wide as the longest probe name, so every flavour lines up."""
from gespann.check import CheckReport
from gespann.probes import TrialResult


def report_of(*probes: TrialResult) -> CheckReport:
    return CheckReport(kernel="6.1.0", machine="x86_64", capabilities={"CAP_BPF": True}, missing_capabilities=[],
                       type_information="kernel BTF", type_information_error=None, features=[], probes=list(probes))


def test_a_long_probe_name_widens_the_column_for_every_probe():
    probes = (TrialResult("tcp_lifecycle", "tp_btf/inet_sock_set_state", "bpf_link", {}),
              TrialResult("inbound_refused_by_local_port", "tracepoint/tcp/tcp_receive_reset", "bpf_link",
                          {"tp_btf": "no kernel BTF"}),
              TrialResult("udp_send", None, None, {}))
    lines = report_of(*probes).lines()
    rows = lines[lines.index("probes") + 1:lines.index("probes") + 5]
    starts = [row.index(text) for row, text in zip(rows, ("tp_btf/", "tracepoint/", "not tp_btf", "UNAVAILABLE"))]
    assert starts[0] == starts[1] == starts[3] == len("  inbound_refused_by_local_port "), rows
    assert starts[2] == starts[0] + 2, rows  # a reason is indented under its probe's flavour


def test_short_names_keep_the_sixteen_wide_column():
    lines = report_of(TrialResult("udp_send", "tp_btf/net_dev_queue", "bpf_link", {})).lines()
    assert "  udp_send         tp_btf/net_dev_queue via bpf_link" in lines
