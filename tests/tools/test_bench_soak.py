"""The soak's judgement of a /metrics page against the kernel's counts: an end the kernel skipped gespann's
program for is accounted only when gespann says so, and the strict targets still say missed."""
from bench import soak

OPENED = 1000


def _page(closed_client: int, closed_server: int, unseen_client: int = 0, unseen_server: int = 0,
          unseen_metric: bool = True) -> str:
    lines = [
        f'gespann_connections_opened_total{{protocol="tcp",role="client"}} {OPENED}',
        f'gespann_connections_opened_total{{protocol="tcp",role="server"}} {OPENED}',
        f'gespann_connections_closed_total{{protocol="tcp",role="client"}} {closed_client}',
        f'gespann_connections_closed_total{{protocol="tcp",role="server"}} {closed_server}',
    ]
    if unseen_metric:
        lines += [f'gespann_connection_ends_unseen_total{{protocol="tcp",role="client"}} {unseen_client}',
                  f'gespann_connection_ends_unseen_total{{protocol="tcp",role="server"}} {unseen_server}']
    return "\n".join(lines) + "\n"


def test_ends_are_accounted_when_closed_plus_unseen_is_the_kernels_count():
    assert soak._ends_accounted(_page(OPENED, OPENED), OPENED, OPENED)
    assert soak._ends_accounted(_page(OPENED - 1, OPENED - 1, 1, 1), OPENED, OPENED)


def test_a_silent_shortfall_is_not_accounted():
    assert not soak._ends_accounted(_page(OPENED - 1, OPENED - 1), OPENED, OPENED)
    assert not soak._ends_accounted(_page(OPENED - 1, OPENED - 1, unseen_metric=False), OPENED, OPENED)
    assert not soak._ends_accounted(_page(OPENED - 1, OPENED, 1, 1), OPENED, OPENED)  # one said twice


def _result(**overrides) -> dict:
    result = {"records": 2 * OPENED - 2, "records_lost": 0, "records_bad": 0, "records_expected": 2 * OPENED,
              "rss_growth_mib": 0.5, "counted_exact": False, "ends_accounted": True,
              "unseen_ends": {"client": 1, "server": 1}}
    return {**result, **overrides}


def test_records_of_unseen_ends_are_accounted_but_not_read():
    judged = soak.verdicts(_result())
    assert judged["every record read, or its loss counted (records lost, unseen ends)"] is True
    assert judged["no record lost, every record read"] is False
    assert judged["metrics exact against /proc/net/snmp"] is False
    assert soak.verdicts(_result(unseen_ends={"client": 1}))[
        "every record read, or its loss counted (records lost, unseen ends)"] is False


def test_a_soak_from_before_the_unseen_count_is_not_judged_on_it():
    old = {key: value for key, value in _result().items() if key not in ("unseen_ends", "ends_accounted")}
    judged = soak.verdicts(old)
    assert judged["every record read, or its loss counted (records lost, unseen ends)"] is None
    assert judged["every end counted, closed or said unseen (gespann_connection_ends_unseen_total)"] is None


def test_shortfalls_are_where_the_counts_fell_further_behind():
    points = [{"at_s": 60, "active_opens": 10, "passive_opens": 10, "closed_client": 10, "closed_server": 10},
              {"at_s": 120, "active_opens": 20, "passive_opens": 20, "closed_client": 19, "closed_server": 19},
              {"at_s": 180, "active_opens": 30, "passive_opens": 30, "closed_client": 29, "closed_server": 29}]
    found = soak.shortfalls({"checkpoints": points})
    assert [(p["at_s"], p["short_client"], p["short_server"]) for p in found] == [(120, 1, 1)]


def test_a_shortfall_says_its_unseen_ends_as_whole_numbers():
    missed = {'{probe="tcp_lifecycle"}': 0.0}
    points = [{"at_s": 60, "active_opens": 10, "passive_opens": 10, "closed_client": 10, "closed_server": 10},
              {"at_s": 120.1, "active_opens": 20, "passive_opens": 20, "closed_client": 19, "closed_server": 19,
               "unseen_client": 1.0, "unseen_server": 1.0, "runs_missed_by_probe": missed}]
    cells = soak._shortfall_cells({"checkpoints": points})
    assert cells == '120 s: 1 / 1 (unseen 1 / 1), {probe="tcp_lifecycle"} 0'
    points[1] = {key: value for key, value in points[1].items() if not key.startswith("unseen")}
    assert "(unseen ? / ?)" in soak._shortfall_cells({"checkpoints": points})
