"""Network namespaces that a test makes for itself, and removes again.

Traffic inside one is invisible to every other namespace, so a probe scoped
to it counts exactly the test's own traffic on a busy host.
"""
import contextlib
import ipaddress
import os
import uuid
from collections.abc import Sequence

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


IFA_F_NODAD = 0x02  # an IPv6 address usable at once, without duplicate address detection


def link(a: Namespace, b: Namespace, a_addresses: Sequence[str], b_addresses: Sequence[str]) -> None:
    """A veth pair from `a` to `b`, both ends up, with "address/prefix" entries on each end.

    Traffic between the two then crosses a real device, as between a pod and its host.
    """
    suffix = uuid.uuid4().hex[:6]
    near, far = f"gsp{suffix}a", f"gsp{suffix}b"
    with IPRoute(netns=a.name) as ipr:
        ipr.link("add", ifname=near, kind="veth", peer={"ifname": far, "net_ns_fd": b.name})
    for namespace, name, addresses in ((a, near, a_addresses), (b, far, b_addresses)):
        with IPRoute(netns=namespace.name) as ipr:
            index = ipr.link_lookup(ifname=name)[0]
            for entry in addresses:
                interface = ipaddress.ip_interface(entry)
                ipr.addr("add", index=index, address=str(interface.ip), prefixlen=interface.network.prefixlen,
                         flags=IFA_F_NODAD if interface.version == 6 else 0)
            ipr.link("set", index=index, state="up")
