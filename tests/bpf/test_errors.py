"""Errors say what to do: which capability is missing, what the verifier said, what errno meant."""
import subprocess
import sys

import pytest
from identities import require_interpreter_usable_by

from gespann.bpf.errors import (
    BPFError,
    FeatureUnsupportedError,
    MemoryLimitError,
    PermissionDeniedError,
    VerifierError,
    effective_capabilities,
    errno_name,
    memory_cgroup_limit,
)


def test_effective_capabilities_from_proc_status(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000000c000000000\n")  # bits 38 and 39
    assert effective_capabilities(str(status)) == {"CAP_PERFMON", "CAP_BPF"}
    status.write_text("CapEff:\t0000000000200000\n")  # bit 21
    assert effective_capabilities(str(status)) == {"CAP_SYS_ADMIN"}
    assert effective_capabilities(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("held, verdict", [
    (set(), "lacks CAP_BPF, CAP_PERFMON"),
    ({"CAP_BPF"}, "lacks CAP_PERFMON"),
    ({"CAP_SYS_ADMIN"}, "holds them"),
    ({"CAP_BPF", "CAP_PERFMON"}, "holds them"),
])
def test_permission_error_names_what_is_missing(held, verdict):
    error = PermissionDeniedError("bpf(BPF_PROG_LOAD)", ("CAP_BPF", "CAP_PERFMON"), 1, held=held)
    assert str(error).startswith("bpf(BPF_PROG_LOAD): Operation not permitted (EPERM); "
                                 "needs CAP_BPF and CAP_PERFMON (kernel 5.8+; or CAP_SYS_ADMIN; root has all);")
    assert verdict in str(error) and error.errno == 1


def test_sys_admin_does_not_stand_in_for_file_access():
    """tracefs is root's (mode 0700): CAP_SYS_ADMIN does not open it, CAP_DAC_READ_SEARCH does."""
    error = PermissionDeniedError("reading format", ("CAP_DAC_READ_SEARCH",), 13, held={"CAP_SYS_ADMIN"},
                                  note="or run as uid 0")
    assert str(error) == ("reading format: Permission denied (EACCES); needs CAP_DAC_READ_SEARCH "
                          "(or run as uid 0); this process lacks CAP_DAC_READ_SEARCH")
    assert PermissionDeniedError("x", ("CAP_DAC_READ_SEARCH",), 13, held={"CAP_DAC_READ_SEARCH"}).missing == []


def test_verifier_error_ends_with_the_tail_of_the_log():
    log = "".join(f"{i}: line\n" for i in range(100)) + "R2 invalid mem access 'scalar'\n"
    error = VerifierError("gt_prog", 13, log)
    message = str(error)
    assert "'gt_prog'" in message and "(EACCES)" in message
    assert message.endswith("R2 invalid mem access 'scalar'")
    assert "\n81: line" in message and "\n80: line" not in message  # 19 log lines and the verdict
    assert error.log == log


def test_feature_and_errno_names():
    assert "ring buffer" in str(FeatureUnsupportedError("ring buffer", "5.8")) and "5.8" in str(
        FeatureUnsupportedError("ring buffer", "5.8"))
    assert errno_name(524) == "ENOTSUPP" and errno_name(1) == "EPERM"


@pytest.mark.root
def test_unprivileged_process_is_told_which_capability_it_lacks():
    """As nobody with no capabilities, creating a map fails with a message naming CAP_BPF."""
    require_interpreter_usable_by(65534)
    script = ("from gespann.bpf import maps\n"
              "from gespann.bpf.errors import PermissionDeniedError\n"
              "try:\n    maps.HashMap(4, 4, 1, name='gt_denied')\n"
              "except PermissionDeniedError as e:\n    print(e)\n")
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                             sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": ":".join(p for p in sys.path if p)})
    assert "bpf(BPF_MAP_CREATE): Operation not permitted (EPERM)" in result.stdout, result.stderr
    assert "lacks CAP_BPF" in result.stdout


def test_memlock_is_named_only_when_it_can_be_the_cause(monkeypatch):
    """EPERM with the capabilities held, a limited RLIMIT_MEMLOCK and a kernel before 5.11:
    CAP_SYS_RESOURCE is named; on 5.11+, or with a capability missing, the usual message."""
    import resource

    from gespann.bpf import syscall
    monkeypatch.setattr(resource, "getrlimit", lambda which: (65536, 65536))
    monkeypatch.setattr("gespann.bpf.errors.effective_capabilities", lambda: {"CAP_BPF"})
    monkeypatch.setattr(syscall, "kernel_version_code", lambda: 0x050A00)
    old = str(syscall.syscall_error("bpf(BPF_MAP_CREATE)", 1, ("CAP_BPF",)))
    assert "needs CAP_SYS_RESOURCE" in old and "here 65536 bytes" in old and "lacks CAP_SYS_RESOURCE" in old
    assert "lacks CAP_PERFMON" in str(syscall.syscall_error("bpf(BPF_PROG_LOAD)", 1, ("CAP_BPF", "CAP_PERFMON")))
    monkeypatch.setattr(syscall, "kernel_version_code", lambda: 0x050B00)
    assert "holds them" in str(syscall.syscall_error("bpf(BPF_MAP_CREATE)", 1, ("CAP_BPF",)))


@pytest.mark.root
def test_memlock_limit_of_old_kernels_is_named():
    """Before 5.11 maps are charged to RLIMIT_MEMLOCK: with CAP_BPF but a limit it cannot lift
    (no CAP_SYS_RESOURCE), the error names CAP_SYS_RESOURCE and the limit, not a mystery."""
    from gespann.bpf.syscall import kernel_version_code
    if kernel_version_code() >= 0x050B00:
        pytest.skip("5.11+ charges BPF memory to the memory cgroup, not RLIMIT_MEMLOCK")
    require_interpreter_usable_by(65534)
    script = ("from gespann.bpf import maps\n"
              "from gespann.bpf.errors import PermissionDeniedError\n"
              "try:\n    maps.HashMap(4, 4, 1024, name='gt_memlock')\n"
              "except PermissionDeniedError as e:\n    print(e)\n")
    caps = "-all,+bpf,+perfmon"
    result = subprocess.run(["prlimit", "--memlock=0:0", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             f"--inh-caps={caps}", f"--ambient-caps={caps}", sys.executable, "-c", script],
                            capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": ":".join(p for p in sys.path if p)})
    assert ("bpf(BPF_MAP_CREATE): Operation not permitted (EPERM); needs CAP_SYS_RESOURCE"
            in result.stdout), result.stderr
    assert "RLIMIT_MEMLOCK, here 0 bytes" in result.stdout and "lacks CAP_SYS_RESOURCE" in result.stdout


def _cgroup_files(root, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_tightest_memory_limit_above_the_process_is_found_in_v2_and_v1(tmp_path):
    root = tmp_path / "cgroup"
    _cgroup_files(root, {"a/memory.max": "209715200\n", "a/memory.current": "1048576\n",
                         "a/b/memory.max": "max\n", "a/b/memory.current": "1024\n"})
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/a/b\n")
    assert memory_cgroup_limit(str(proc), str(root)) == (f"{root}/a/memory.max", 200 << 20, 1 << 20)
    _cgroup_files(root, {"memory/x/memory.limit_in_bytes": "104857600\n", "memory/x/memory.usage_in_bytes": "5\n",
                         "memory/memory.limit_in_bytes": "9223372036854771712\n",
                         "memory/memory.usage_in_bytes": "7\n"})
    proc.write_text("4:memory:/x\n1:cpu:/\n0::/\n")
    assert memory_cgroup_limit(str(proc), str(root)) == (f"{root}/memory/x/memory.limit_in_bytes", 100 << 20, 5)
    proc.write_text("4:memory:/\n")
    assert memory_cgroup_limit(str(proc), str(root)) is None  # v1's "no limit" is a page count near 2**63


def test_an_enomem_names_the_limit_and_the_settings():
    cause = BPFError("bpf(BPF_MAP_CREATE): Cannot allocate memory (ENOMEM)", 12)
    limited = MemoryLimitError(cause, "limits.udp_flows", limit=("/sys/fs/cgroup/x/memory.max", 100 << 20, 3 << 19))
    assert str(limited) == ("bpf(BPF_MAP_CREATE): Cannot allocate memory (ENOMEM); the kernel charges BPF maps to "
                            "the memory cgroup (Linux 5.11+), and /sys/fs/cgroup/x/memory.max allows 100.0 MiB, "
                            "1.5 MiB in use; raise that limit, or lower limits.udp_flows")
    assert limited.errno == 12
