"""The directories a guest mounts for itself: which, in what order, with which options."""
import sys
import sysconfig
from pathlib import Path

import pytest
from matrix import shares
from matrix.shares import Share

REPO = Path("/work/repo")


def test_a_parent_is_mounted_before_what_lies_inside_it_and_nested_read_only_shares_are_dropped():
    exported = [Share(REPO / "results" / "matrix", writable=True), Share(REPO / ".venv"), Share(REPO),
                Share(Path("/usr/lib/python3.11"))]
    lines = shares.mount_commands(exported)
    assert [line.split()[9:11] for line in lines] == [
        ["gespann0", "/work/repo"], ["gespann1", "/usr/lib/python3.11"], ["gespann2", "/work/repo/results/matrix"]]
    assert ",cache=loose " in lines[0] and " -o rw," in lines[2] and "cache" not in lines[2]
    assert lines[0].startswith("mkdir -p /work/repo && mount -t 9p -o ro,")
    assert lines[0].endswith("|| { echo kernel-matrix: cannot mount /work/repo; exit 1; }")


def test_qemu_exports_each_share_under_the_tag_the_guest_mounts():
    options = shares.qemu_options([Share(REPO), Share(REPO / "out", writable=True)])
    assert options == [
        "-fsdev", "local,id=gespann0,path=/work/repo,security_model=none,readonly=on",
        "-device", "virtio-9p-pci,fsdev=gespann0,mount_tag=gespann0",
        "-fsdev", "local,id=gespann1,path=/work/repo/out,security_model=none",
        "-device", "virtio-9p-pci,fsdev=gespann1,mount_tag=gespann1",
    ]


@pytest.mark.parametrize("path", ["/work/my repo", "/work/a,b", "/work/it's"])
def test_a_path_qemu_cannot_take_is_refused_up_front(path):
    with pytest.raises(shares.ShareError, match="cannot export"):
        shares.qemu_options([Share(Path(path))])


def test_the_suite_needs_the_checkout_the_interpreter_and_its_standard_library():
    found = shares.for_suite(REPO, Path(sys.executable))
    assert found == [Share(REPO), Share(Path(sys.prefix)), Share(Path(sysconfig.get_path("stdlib")))]
