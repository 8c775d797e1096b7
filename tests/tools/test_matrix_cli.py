"""tools/kernel_matrix.py end to end on the host column alone, which needs no VM."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import kernel_matrix
import pytest
from process_state import process_state, wait_until


@pytest.mark.parametrize("kernels", ["4.19", "6.1,6.1", ""])
def test_unknown_or_repeated_kernels_are_refused(kernels, capsys):
    with pytest.raises(SystemExit):
        kernel_matrix.parse_args(["--kernels", kernels])
    assert "--kernels: expected distinct names among 5.10, 6.1, 6.12, host" in capsys.readouterr().err


def test_the_kernels_keep_the_order_given():
    assert kernel_matrix.parse_args(["--kernels", "host, 6.12,5.10"]).kernels == ["host", "6.12", "5.10"]


ROOT_TEST_PASSES = "import pytest\n\n@pytest.mark.root\ndef test_passes(): pass\n"


def matrix_of(tmp_path, source, *extra):
    (tmp_path / "test_kernel.py").write_text(textwrap.dedent(source))
    results = tmp_path / "results"
    status = kernel_matrix.main(["--kernels", "host", "--python", sys.executable, "--results", str(results),
                                 "--tests", str(tmp_path / "test_kernel.py"), *extra])
    return status, results


def test_a_failing_test_fails_the_matrix_and_keeps_its_logs(tmp_path, capsys):
    status, results = matrix_of(tmp_path, """
        import pytest

        @pytest.mark.root
        def test_raw_tracepoint_fires():
            assert False, "no event"
    """)
    out, err = capsys.readouterr()
    assert status == 1
    assert "| raw_tracepoint | fail |" in out
    assert (results / "kernel-matrix.md").read_text() == out
    data = json.loads((results / "kernel-matrix.json").read_text())
    assert data["passed"] is False and data["cells"]["raw_tracepoint"]["host"]["state"] == "fail"
    assert (results / "kernel-matrix" / "host.xml").exists()
    assert "host: running the tests on the host" in err and "FAILED" in err


def test_a_passing_matrix_cleans_up_its_logs_unless_kept(tmp_path, capsys):
    status, results = matrix_of(tmp_path, ROOT_TEST_PASSES)
    assert status == 0 and not (results / "kernel-matrix").exists()
    assert "| other root tests | pass |" in capsys.readouterr().out
    status, results = matrix_of(tmp_path, ROOT_TEST_PASSES, "--keep")
    assert status == 0 and (results / "kernel-matrix" / "host.pytest.log").exists()


def test_no_selected_test_is_an_error(tmp_path, capsys):
    status, _ = matrix_of(tmp_path, "def test_not_marked_root(): pass\n")
    assert status == 2
    assert "no test in" in capsys.readouterr().err


def test_a_missing_interpreter_is_named(tmp_path, capsys):
    assert kernel_matrix.main(["--kernels", "host", "--python", str(tmp_path / "python"),
                               "--results", str(tmp_path)]) == 2
    assert f"no interpreter at {tmp_path / 'python'}" in capsys.readouterr().err


def test_sigterm_stops_the_runs_as_ctrl_c_does(tmp_path):
    """A CI job's time limit ends the matrix with SIGTERM: what it started must not live on."""
    pid_file = tmp_path / "pytest.pid"
    (tmp_path / "test_kernel.py").write_text(textwrap.dedent(f"""
        import os, time, pytest

        @pytest.mark.root
        def test_sleeps():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(60)
    """))
    matrix = subprocess.Popen([sys.executable, kernel_matrix.__file__, "--kernels", "host",
                               "--python", sys.executable, "--results", str(tmp_path / "results"),
                               "--tests", str(tmp_path / "test_kernel.py")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(pid_file.exists, 60), "the test never started"
        matrix.send_signal(signal.SIGTERM)
        _, err = matrix.communicate(timeout=30)
        assert matrix.returncode == 130
        assert "interrupted; its VMs are stopped" in err
        test_pid = int(pid_file.read_text())
        assert wait_until(lambda: process_state(test_pid) in ("gone", "Z"), 10), process_state(test_pid)
    finally:
        matrix.kill()
        if pid_file.exists() and process_state(int(pid_file.read_text())) not in ("gone", "Z"):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # what the matrix failed to stop
