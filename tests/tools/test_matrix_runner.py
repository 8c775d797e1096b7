"""A run of a suite on one kernel, told apart by its markers: ran, did not boot, crashed, timed out.

A VM is stood in for by a command that runs the guest script on the host (or
does not), so every way a run can end is exercised without booting a kernel.
"""
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from matrix import runner
from matrix.junit import Outcome
from matrix.kernels import Target
from matrix.runner import Settings, Status
from matrix.shares import Share
from matrix.virtme import VirtmeNg
from process_state import process_state, wait_until

SUITE = """
    import os, time, pytest

    pytestmark = pytest.mark.root

    @pytest.mark.process
    def test_starts_a_process():
        pass

    def test_passes():
        pass

    def test_fails():
        assert 1 == 2

    def test_sleeps_if_asked():
        if os.environ.get("SLEEP_IN_TEST"):
            open(os.environ["SLEEP_IN_TEST"], "w").write(str(os.getpid()))
            time.sleep(60)
"""


class FakeVirtme(VirtmeNg):
    """Boots nothing: runs `guest` (a function of the guest script) as the VM command,
    with a `mount` that only writes down what it was asked to mount."""

    def __init__(self, guest, fake_bin: Path):
        super().__init__(Path("/nonexistent"))
        self.guest, self.fake_bin = guest, fake_bin
        fake_bin.mkdir(exist_ok=True)
        (fake_bin / "mount").write_text(f'#!/bin/sh\necho "$@" >> {fake_bin / "mounts"}\n')
        (fake_bin / "mount").chmod(0o755)

    def command(self, vmlinuz, script, qemu_options, **vm):
        self.qemu_options = qemu_options
        return ["sh", "-c", self.guest(script)]

    def env(self):
        return dict(os.environ, PATH=f"{self.fake_bin}:{os.environ['PATH']}")


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "test_suite.py").write_text(textwrap.dedent(SUITE))
    (tmp_path / "out").mkdir()
    (tmp_path / "repo" / "pytest.ini").write_text("[pytest]\nmarkers =\n    root: kernel\n    process: host only\n")
    return Settings(repo=tmp_path / "repo", python=Path(sys.executable), pytest_args=["test_suite.py"],
                    outdir=tmp_path / "out", timeout_s=60, guest_markers="root and not process")


VM = Target("6.1", "6.1.0-37-amd64", Path("/boot/vmlinuz-none"), Path("/kernels/6.1/lib/modules/6.1.0-37-amd64"))
HOST = Target("host", os.uname().release)


def run(target, settings, guest=lambda script: script, **kw):
    return runner.run(target, settings, FakeVirtme(guest, settings.outdir.parent / "bin"), lambda message: None, **kw)


def test_the_host_runs_the_suite_directly(settings):
    done = run(HOST, settings)
    assert done.status is Status.OK, done.detail
    assert {r.id: r.outcome for r in done.results} == {
        "test_suite::test_starts_a_process": Outcome.PASSED,
        "test_suite::test_passes": Outcome.PASSED, "test_suite::test_fails": Outcome.FAILED,
        "test_suite::test_sleeps_if_asked": Outcome.PASSED}
    assert done.boot_s is None and 0 < done.test_s <= done.total_s
    assert settings.outdir / "host.pytest.log" in done.logs


def test_a_vm_run_splits_boot_and_test_time(settings):
    done = run(VM, settings, guest=lambda script: f"sleep 1.2; {script}")
    assert done.status is Status.OK, done.detail
    assert 1 <= done.boot_s < done.total_s and done.test_s > 0
    assert "test_suite::test_starts_a_process" not in {r.id for r in done.results}  # host only
    assert len(done.results) == 3


def test_a_long_run_says_how_far_it_has_got(settings):
    """CI sees a line per heartbeat: first that the kernel is still booting, then tests done."""
    said = []
    settings = Settings(**{**vars(settings), "heartbeat_s": 0.5, "pytest_args": ["test_suite.py", "-v"]})
    virtme = FakeVirtme(lambda script: f"sleep 1.2; {script}; sleep 1", settings.outdir.parent / "bin")
    assert runner.run(VM, settings, virtme, said.append).status is Status.OK
    beats = [line for line in said if " after " in line]
    assert beats[0].startswith("not booted yet after ")
    assert beats[-1].startswith("3 tests done after "), said


def test_the_guest_mounts_the_shares_before_the_tests(settings):
    settings = Settings(**{**vars(settings), "shares": [Share(settings.repo)]})
    virtme = FakeVirtme(lambda script: script, settings.outdir.parent / "bin")
    assert runner.run(VM, settings, virtme, lambda message: None).status is Status.OK
    mounts = [line.split(" ", 5)[-1] for line in (virtme.fake_bin / "mounts").read_text().splitlines()]
    assert sorted(mounts) == sorted(map(str, [settings.repo, VM.modules, settings.outdir]))
    assert all(f"mount_tag=gespann{i}" in " ".join(virtme.qemu_options) for i in range(3))


def test_a_kernel_that_never_runs_the_script_did_not_boot(settings):
    done = run(VM, settings, guest=lambda script: "echo 'Kernel panic - not syncing: VFS'")
    assert (done.status, done.results, done.boot_s) == (Status.NO_BOOT, None, None)
    assert "Kernel panic" in done.detail


def test_a_guest_that_stops_during_the_tests_crashed(settings):
    started = settings.outdir / "6.1.started"
    done = run(VM, settings, guest=lambda script: f": > {started}; echo 'BUG: kernel NULL pointer dereference'")
    assert done.status is Status.CRASHED
    assert "NULL pointer" in done.detail


def test_pytest_that_cannot_run_the_tests_is_an_error(settings):
    done = run(HOST, Settings(**{**vars(settings), "pytest_args": ["no_such_file.py"]}))
    assert done.status is Status.PYTEST_ERROR
    assert "pytest exited with status 4" in done.detail


def test_the_deadline_ends_the_whole_run(settings, tmp_path, monkeypatch):
    pid_file = tmp_path / "pid"
    monkeypatch.setenv("SLEEP_IN_TEST", str(pid_file))
    begun = time.monotonic()
    done = run(VM, Settings(**{**vars(settings), "timeout_s": 3}))
    assert time.monotonic() - begun < 20
    assert done.status is Status.TIMED_OUT
    assert done.detail.startswith("stopped after 3 s, during the tests")
    pid = int(pid_file.read_text())  # the "guest" pytest goes with its session: SIGKILL takes effect soon
    assert wait_until(lambda: process_state(pid) in ("gone", "Z")), process_state(pid)


def test_stop_from_another_thread_interrupts(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEP_IN_TEST", str(tmp_path / "pid"))
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    done = run(HOST, settings, stop=stop)
    assert done.status is Status.INTERRUPTED
    assert done.detail.startswith("stopped, during the tests")


def test_the_guest_script_runs_from_the_repository_and_leaves_markers_in_the_shared_directory(settings):
    script = runner.guest_script(settings, runner._Files(settings.outdir, "6.1"), "root and not process")
    assert script.splitlines()[0] == f"cd {settings.repo} || exit 1"
    assert "-m pytest -m 'root and not process' test_suite.py -p no:cacheprovider" in script
    assert f"--junitxml={settings.outdir}/6.1.xml" in script
    assert script.splitlines()[-1] == f"echo $? > {settings.outdir}/6.1.exit"


def test_a_vm_tells_its_tests_they_run_emulated_and_the_host_does_not(settings):
    files = runner._Files(settings.outdir, "6.1")
    assert f"{runner.EMULATED}=1 PYTHONDONTWRITEBYTECODE=1" in runner.guest_script(settings, files, "root",
                                                                                 emulated=True)
    assert runner.EMULATED not in runner.guest_script(settings, files, "root")
