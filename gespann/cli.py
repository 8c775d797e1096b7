"""The `gespann` command line.

Every failure a user can cause or fix (bad config, missing privilege, missing kernel
feature) ends in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import NoReturn

import click

from . import __version__

log = logging.getLogger("gespann")

EXIT_FAILURE = 1
EXIT_USAGE = 2  # click's own status for bad usage; bad config uses it too


def _fail(message: str, status: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"gespann: {message}", err=True)
    sys.exit(status)


def _load_config(path):
    from .config import ConfigError, load

    try:
        return load(path)
    except ConfigError as err:
        _fail(f"config: {err}", EXIT_USAGE)


def _start_logging(config, **options) -> None:
    """The log at the config's level, then what the config said in an older way."""
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s", **options)
    _warn_deprecations(config)


def _warn_deprecations(config) -> None:
    """One warning line per older spelling the config used (to stderr, in the log's format once it has one)."""
    for deprecation in config.deprecations:
        log.warning("%s", deprecation)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gespann")
def main() -> None:
    """gespann: every TCP and UDP connection on this host, seen from the kernel with eBPF.

    Needs root, or CAP_BPF and CAP_PERFMON. Needs no compiler and no kernel headers.
    """


def _foreign_namespace(path: str | None) -> str | None:
    """scope.netns as the collector's sock_diag needs it: None when it is gespann's own network
    namespace (a pod sidecar's), since a dump made there needs no setns, hence no CAP_SYS_ADMIN."""
    if path is None:
        return None
    own, target = os.stat("/proc/self/ns/net"), os.stat(path)
    return None if (own.st_dev, own.st_ino) == (target.st_dev, target.st_ino) else path


def _raise_open_files_limit() -> None:
    """The soft limit on open files up to the hard one: the metrics page may hold max_connections sockets
    beside the BPF objects, and the default soft limit (1,024) is the kernel's, not a choice. Where it cannot
    be raised (a seccomp filter, say) the page server backs off when accept() runs out, and counts it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or soft == resource.RLIM_INFINITY:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as err:
        log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, err)


def _start_failure(err, config) -> NoReturn:
    """A start that the kernel refused: one line. Memory the kernel would not give the maps is a matter
    of configuration (the limits) or of the memory cgroup's limit: the line names both."""
    import errno

    from .bpf.errors import MemoryLimitError
    from .config import LIMITS

    if err.errno == errno.ENOMEM:
        set_here = ", ".join(f"{name} {n}" for name, n in sorted(config.map_capacities.items()))
        sizing = " and ".join(f"limits.{name}" for name in LIMITS) + (f" (set: {set_here})" if set_here else "")
        _fail(str(MemoryLimitError(err, sizing)), EXIT_USAGE)
    _fail(str(err))


def _stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM: the way every long-running command ends cleanly."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _attach(config, stack, *, records: bool):
    """Attach every probe and open the collector over them, both closed by `stack`. With `records`,
    the probes also send connection records, through the reader the config asks for (per-process
    labels need none: the kernel counts TCP ends by owner)."""
    from .bpf.channel import RecordChannel
    from .bpf.errors import PermissionDeniedError
    from .collector.by_process import LabelSettings
    from .collector.collector import KernelCollector
    from .probes import ProbeSet

    label_settings = LabelSettings(config.label_process, config.label_container, config.label_max_series)
    channel = (stack.enter_context(RecordChannel.for_reader(config.event_reader, "gsp_records", config.ringbuf_bytes))
               if records else None)
    probes = stack.enter_context(ProbeSet.attach_all(config, records=channel))
    try:
        collector = stack.enter_context(KernelCollector(probes, _foreign_namespace(config.netns), records=channel,
                                                        idle_timeout=config.idle_timeout,
                                                        udp_flow_timeout=config.udp_flow_timeout,
                                                        label_settings=label_settings))
    except PermissionError as err:  # only the collector's setns into scope.netns raises it here
        raise PermissionDeniedError(f"entering scope.netns {config.netns} for sock_diag (setns)",
                                    ("CAP_SYS_ADMIN",), err.errno,
                                    note="or run gespann inside that namespace, with scope.netns "
                                         "/proc/self/ns/net") from None
    return probes, collector


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config file (default: built-in defaults: Prometheus metrics on :8080/metrics).")
def run(config_path: str | None) -> None:
    """Attach the probes, serve the configured exporters, and run until SIGINT or SIGTERM.

    On exit the exporters are flushed and everything is detached: nothing of
    gespann's stays loaded in the kernel.
    """
    from contextlib import ExitStack

    from .bpf.errors import BPFError
    from .exporters import ExporterError, build_exporters, wants_events

    config = _load_config(config_path)
    _start_logging(config)
    _raise_open_files_limit()
    stop = _stop_on_signals()
    with ExitStack() as running:
        try:
            probes, collector = _attach(config, running, records=wants_events(config.exporters))
            exporters = build_exporters(config.exporters, collector)
            for exporter in exporters:
                exporter.start()
                running.callback(exporter.close)  # closed (and flushed) first, in reverse order
        except BPFError as err:
            _start_failure(err, config)
        except ExporterError as err:
            _fail(str(err))
        endpoints = "; ".join(exporter.describe() for exporter in exporters) or "no exporters"
        log.info("gespann %s running: probes %s; exporting to %s", __version__, probes.summary(), endpoints)
        stop.wait()
        log.info("stopping: flushing %d exporters, detaching %d probes", len(exporters), len(probes))
    sys.exit(0)


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config file whose attach, scope and events settings to apply (its exporters are not run).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line instead of a table.")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="Exit after this many events (default: run until SIGINT or SIGTERM).")
def trace(config_path: str | None, as_json: bool, count: int | None) -> None:
    """Print one line per connection as it ends: TCP closes, resets and failed opens, and UDP
    flows that went idle.

    Columns, as bcc's tcplife: time, pid and comm of the owning process, protocol,
    role (client or server), local and remote endpoints, outcome and its reason
    (reset sent/received; failed refused, timeout, ...), payload bytes each way,
    duration and smoothed RTT in milliseconds. With --json the same fields, plus
    retransmits, datagrams, cgroup and container id, come as JSON lines. Records
    the kernel could not deliver are counted and reported on stderr at exit.
    """
    from contextlib import ExitStack

    from .bpf.errors import BPFError
    from .exporters.events import json_line, table_header, table_line

    config = _load_config(config_path)
    _start_logging(config, stream=sys.stderr)
    stop = _stop_on_signals()
    printed = 0
    with ExitStack() as running:
        try:
            _, collector = _attach(config, running, records=True)
        except BPFError as err:
            _start_failure(err, config)
        if not as_json:
            click.echo(table_header())
        format_line = json_line if as_json else table_line
        while not stop.is_set() and (count is None or printed < count):
            events = list(collector.events(timeout=0.2))
            if count is not None:
                events = events[:count - printed]
            if events:  # one write per batch: click.echo flushes every line, 4 µs a record at the highest rates
                sys.stdout.write("".join(f"{format_line(event)}\n" for event in events))
                sys.stdout.flush()
                printed += len(events)
        snapshot = collector.snapshot()
    lost = snapshot["records_lost_total"].total()
    if lost:
        click.echo(f"gespann: {lost} connection records were lost (the kernel's buffer was full; "
                   "events.ringbuf_bytes makes the ring buffer larger)", err=True)
    unseen = snapshot.metrics.get("connection_ends_unseen_total")
    if unseen is not None and unseen.total():
        click.echo(f"gespann: {unseen.total()} TCP connection ends went unseen and have no line (no run of "
                   "gespann's program saw their CLOSE; found when their sockets were freed)", err=True)
    sys.exit(0)


@main.command("probes")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config file whose attach settings to apply.")
def list_probes(config_path: str | None) -> None:
    """List the probe points, their flavours, and which one attaches on this kernel.

    Each probe is attached and detached again, so the answer is the kernel's own:
    for every flavour passed over, the reason is printed.
    """
    from .probes import AttachSettings, selected_probes, trial_attach

    config = _load_config(config_path)
    _warn_deprecations(config)
    settings = AttachSettings.from_config(config)
    for probe in selected_probes(config):
        click.echo(f"{probe.name}: {probe.summary}")
        trial = trial_attach(probe, settings)
        for flavour in map(str, probe.flavours):
            if flavour == trial.flavour:
                outcome = f"attached ({trial.path})"
            else:
                outcome = trial.passed_over.get(flavour, "not tried")
            click.echo(f"  {flavour:<44} {outcome}")
        if trial.flavour is None and not trial.passed_over:
            click.echo(f"  {trial.error}")


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config file whose attach and BTF settings to apply.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(config_path: str | None, as_json: bool) -> None:
    """Report what this host offers gespann: kernel, privileges, type information,
    kernel features, and for each probe the flavour chosen and why better ones were not.

    Exits 1 only when gespann cannot run at all, and says why.
    """
    import json

    from .check import run_check

    config = _load_config(config_path)
    _warn_deprecations(config)
    report = run_check(config)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.lines():
            click.echo(line)
    if report.fatal:
        sys.exit(EXIT_FAILURE)


@main.command()
@click.argument("probe_name", metavar="PROBE")
@click.option("--mode", default=None, help="The flavour to show (default: the probe's first).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML config file whose extra_probes to look in too.")
@click.option("--syntax", type=click.Choice(["llvm", "dsl"]), default="llvm", show_default=True,
              help="llvm: llvm-objdump's, to diff against clang's objects; dsl: labels, map and helper names.")
def disasm(probe_name: str, mode: str | None, config_path: str | None, syntax: str) -> None:
    """Print PROBE's eBPF bytecode in llvm-objdump syntax, or as the DSL names things.

    Offsets come from this kernel's tracefs and BTF. In llvm syntax map
    references print as unresolved loads (fd 0), since nothing is loaded, and
    jumps and calls by offset and id; `--syntax dsl` prints the program's labels,
    `map[name]` for a map and `call bpf_<helper>` for a helper.
    """
    import asm

    from .bpf.errors import BPFError
    from .btf import BTFError
    from .probes import find_probe

    probe = find_probe(probe_name, _load_config(config_path).extra_probes)
    if probe is None:
        _fail(f"no probe named {probe_name!r}; `gespann probes` lists them", EXIT_USAGE)
    try:
        flavour = probe.flavour(mode) if mode else probe.flavours[0]
    except KeyError as err:
        _fail(str(err.args[0]), EXIT_USAGE)
    try:
        program = probe.program(flavour)
    except (BPFError, BTFError) as err:
        _fail(str(err))
    click.echo(f"; {probe.name} as {flavour}")
    if syntax == "dsl":
        click.echo(program.listing(dsl=True), nl=False)
        return
    code = program.assemble(maps={name: 0 for name in program.map_names})
    click.echo(asm.disassemble(code), nl=False)


@main.group()
def btf() -> None:
    """Kernel type information: struct layouts from BTF, without headers."""


@btf.command()
@click.argument("struct")
@click.argument("field_path", metavar="FIELD.PATH")
@click.option("--btf", "btf_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Raw BTF or ELF vmlinux file (default: the running kernel's BTF).")
def offsetof(struct: str, field_path: str, btf_file: str | None) -> None:
    """Print the byte offset and size of STRUCT's FIELD.PATH.

    Example: gespann btf offsetof sock __sk_common.skc_dport
    """
    from .btf import BTFError
    from .btf import offsetof as resolve

    try:
        location = resolve(struct, field_path, btf=btf_file)
    except BTFError as err:
        _fail(str(err))
    click.echo(str(location))


if __name__ == "__main__":
    main()
