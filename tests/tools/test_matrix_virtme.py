"""virtme-ng's installation and the vng command line the matrix boots kernels with."""
from pathlib import Path

from matrix import virtme
from matrix.virtme import VirtmeNg


def test_the_command_boots_the_kernel_under_emulation_and_hands_qemu_options_last():
    vng = VirtmeNg(Path("/cache/vng-venv"))
    argv = vng.command(Path("/k/vmlinuz"), "sh /out/6.1.sh", ["-fsdev", "local,id=g0"], memory="2G", cpus=2, kvm=False)
    assert argv == ["/cache/vng-venv/bin/vng", "--verbose", "--run", "/k/vmlinuz", "--disable-kvm",
                    "--memory", "2G", "--cpus", "2", "--exec", "sh /out/6.1.sh", "--qemu-opts=-fsdev local,id=g0"]
    assert "--disable-kvm" not in vng.command(Path("/k/vmlinuz"), "true", [], memory="1G", cpus=1, kvm=True)
    assert vng.env()["PATH"].startswith("/cache/vng-venv/bin:")  # vng calls virtme-run


def test_an_installed_matching_version_is_left_alone(monkeypatch, tmp_path):
    vng = VirtmeNg(tmp_path)
    monkeypatch.setattr(vng, "installed_version", lambda: virtme.REQUIREMENT.split("==")[1])
    ran, said = [], []
    monkeypatch.setattr(virtme, "_run", lambda argv, what: ran.append(argv))
    vng.ensure(said.append)
    assert ran == said == []


def test_a_missing_installation_is_created_and_installed(monkeypatch, tmp_path):
    vng = VirtmeNg(tmp_path / "venv")
    monkeypatch.setattr(vng, "installed_version", lambda: None)
    ran = []
    monkeypatch.setattr(virtme, "_run", lambda argv, what: ran.append(argv[1:]))
    said = []
    vng.ensure(said.append)
    assert ran == [["-m", "venv", str(tmp_path / "venv")], ["-m", "pip", "install", "-q", virtme.REQUIREMENT]]
    assert said == [f"installing {virtme.REQUIREMENT} into {tmp_path / 'venv'}"]
