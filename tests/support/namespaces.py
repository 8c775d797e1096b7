"""Network namespaces that a test makes for itself, and removes again.

Traffic inside one is invisible to every other namespace, so a probe scoped
to it counts exactly the test's own traffic on a busy host.
"""
import contextlib
import os
import uuid

from pyroute2 import IPRoute, netns


class Namespace:
    """A fresh network namespace with its loopback up; `enter()` runs code inside it."""

    def __init__(self):
        self.name = f"gespann-test-{uuid.uuid4().hex[:8]}"
        netns.create(self.name)
        try:
            with IPRoute(netns=self.name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        except BaseException:
            netns.remove(self.name)
            raise

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    @property
    def inode(self) -> int:
        return os.stat(self.path).st_ino

    @contextlib.contextmanager
    def enter(self):
        """Sockets made inside this block belong to the namespace."""
        netns.pushns(self.name)
        try:
            yield self
        finally:
            netns.popns()

    def remove(self) -> None:
        netns.remove(self.name)
