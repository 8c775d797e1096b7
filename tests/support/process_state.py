"""Whether a process the test started is gone, read from /proc, and a bounded wait for it."""
import time
from pathlib import Path


def wait_until(condition, seconds: float = 5) -> bool:
    """Poll `condition` for at most `seconds`; its last answer (unlike loopback.wait_for, which returns nothing)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def process_state(pid: int) -> str:
    """The state letter of a process ("Z" for a zombie that its new parent has yet to reap), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
