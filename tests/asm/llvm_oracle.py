"""LLVM's BPF assembler and disassembler, driven as a test oracle.

Each call runs the tools once over a whole batch, so thousands of
instructions cost a handful of processes.
"""
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

MIN_VERSION = 18  # the first LLVM whose BPF target knows every cpu v4 instruction
_ANNOTATION = re.compile(r"\s+<[^\s<>]+>\s*$")


@dataclass(frozen=True)
class LLVM:
    mc: str
    objdump: str
    objcopy: str

    @classmethod
    def find(cls) -> Optional["LLVM"]:
        """The newest suffixed (llvm-mc-19) or plain install of version >= MIN_VERSION on PATH."""
        for suffix in [f"-{version}" for version in range(30, MIN_VERSION - 1, -1)] + [""]:
            tools = [shutil.which(f"{tool}{suffix}") for tool in ("llvm-mc", "llvm-objdump", "llvm-objcopy")]
            if all(tools) and _major_version(tools[0]) >= MIN_VERSION:
                return cls(*tools)
        return None

    def assemble(self, text: str) -> bytes:
        """The .text bytes llvm-mc makes of `text`."""
        with tempfile.TemporaryDirectory() as tmp:
            source, obj, raw = Path(tmp, "in.s"), Path(tmp, "out.o"), Path(tmp, "text.bin")
            source.write_text(text)
            self._run(self.mc, "-triple", "bpfel", "-mcpu=v4", "-filetype=obj", str(source), "-o", str(obj))
            self._run(self.objcopy, "-O", "binary", "--only-section=.text", str(obj), str(raw))
            return raw.read_bytes()

    def disassemble(self, code: bytes) -> list[str]:
        """llvm-objdump's text for `code`, one line per instruction, whitespace and jump annotations normalized."""
        directives = "".join(f".byte {', '.join(map(str, code[i : i + 8]))}\n" for i in range(0, len(code), 8))
        with tempfile.TemporaryDirectory() as tmp:
            source, obj = Path(tmp, "in.s"), Path(tmp, "out.o")
            source.write_text(directives)
            self._run(self.mc, "-triple", "bpfel", "-filetype=obj", str(source), "-o", str(obj))
            listing = self._run(
                self.objdump, "-d", "--mcpu=v4", "--no-show-raw-insn", "--no-leading-addr", str(obj)
            )
        lines = listing.split("<.text>:\n", 1)[1].splitlines()
        return [normalize(line) for line in lines if line.strip()]

    @staticmethod
    def _run(*command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise AssertionError(f"{' '.join(command)} failed:\n{done.stderr}")
        return done.stdout


def normalize(line: str) -> str:
    """One instruction's text with runs of whitespace made one space and objdump's `<.text+0x..>` dropped."""
    return " ".join(_ANNOTATION.sub("", line).split())


def _major_version(tool: str) -> int:
    banner = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"LLVM version (\d+)", banner)
    return int(match.group(1)) if match else 0
