"""Kernels for the matrix: the archive's newest, or the newest fetched earlier when the archive is away."""
import json
import subprocess

import debian_kernels
import pytest
from matrix import kernels


def extracted(cache, series, release, modules="lib/modules"):
    """A kernel tree as debian_kernels leaves it, with what the matrix reads from it."""
    root = cache / release
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{release}").write_bytes(b"")
    (root / modules / release).mkdir(parents=True)
    (root / "kernel-package.json").write_text(json.dumps({
        "series": series, "release": release, "package": f"linux-image-{release}", "version": "1",
        "deb_path": str(cache / "x.deb"), "root": str(root)}))
    return debian_kernels.cached_kernel(cache, release)


def test_newest_cached_compares_releases_by_number(tmp_path):
    for release in ("6.1.0-9-amd64", "6.1.0-37-amd64", "6.12.43+deb13-amd64"):
        extracted(tmp_path, release[:release.index(".", 2)], release)
    (tmp_path / ".apt").mkdir()
    assert kernels.newest_cached("6.1", tmp_path).release == "6.1.0-37-amd64"
    assert kernels.newest_cached("5.10", tmp_path) is None
    assert kernels.newest_cached("6.1", tmp_path / "absent") is None


def test_without_the_archive_the_kernel_fetched_earlier_is_used(tmp_path, monkeypatch):
    kernel = extracted(tmp_path, "6.12", "6.12.43+deb13-amd64", modules="usr/lib/modules")
    (kernel.modules_dir / "modules.dep").write_text("")

    def offline(series, dest):
        raise debian_kernels.DebianKernelError("apt-get update failed:\nTemporary failure resolving")

    monkeypatch.setattr(debian_kernels, "fetch_kernel", offline)
    said = []
    target = kernels.debian("6.12", tmp_path, said.append)
    assert target == kernels.Target("6.12", "6.12.43+deb13-amd64", kernel.vmlinuz_path, kernel.modules_dir)
    assert target.modules == tmp_path / "6.12.43+deb13-amd64" / "usr/lib/modules/6.12.43+deb13-amd64"
    assert said == ["the archive did not answer (apt-get update failed:); using 6.12.43+deb13-amd64 fetched earlier"]
    with pytest.raises(debian_kernels.DebianKernelError):
        kernels.debian("5.10", tmp_path, said.append)


@pytest.mark.parametrize("modules, base", [("lib/modules", ""), ("usr/lib/modules", "usr")])
def test_depmod_runs_once_on_the_tree_that_holds_the_modules(tmp_path, monkeypatch, modules, base):
    kernel = extracted(tmp_path, "6.1", "6.1.0-37-amd64", modules=modules)
    calls = []

    def depmod(argv, **kw):
        calls.append(argv)
        (kernel.modules_dir / "modules.dep").write_text("")

    monkeypatch.setattr(subprocess, "run", depmod)
    kernels.index_modules(kernel)
    kernels.index_modules(kernel)
    assert calls == [["depmod", "-b", str(kernel.root / base), "6.1.0-37-amd64"]]


def test_the_host_column_is_this_machine_without_a_vm():
    host = kernels.host()
    assert (host.name, host.is_host, host.vmlinuz) == ("host", True, None)
