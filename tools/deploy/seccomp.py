"""The container runtime's default seccomp profile, with bpf() allowed to CAP_BPF and
perf_event_open() to CAP_PERFMON.

Older profiles (such as the one Debian 12's podman 4.3 uses) allow both calls only to
CAP_SYS_ADMIN, so gespann's two capabilities are refused with EPERM under them; newer
ones grant each call to the capability that now guards it. A Kubernetes `RuntimeDefault` means
the runtime's profile, so on such a runtime this is the profile `RuntimeDefault` should mean.

    python3 tools/deploy/seccomp.py > /etc/containers/seccomp-bpf.json
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

#: Where Debian's containers-common installs the profile podman, buildah and CRI-O use by default.
DEFAULT_PROFILE = Path("/usr/share/containers/seccomp.json")
#: Each call, and the capability that guards it since Linux 5.8.
GUARDS = {"bpf": "CAP_BPF", "perf_event_open": "CAP_PERFMON"}


def granted_to_guards(profile: dict) -> dict:
    """`profile` where each call of GUARDS is also allowed to its capability.

    A rule naming such a call is split per call; the call's rules that refuse it unless
    CAP_SYS_ADMIN is held (`excludes`) now also stand aside for its capability, and an allow rule
    `includes` it. Every other rule is kept as it is.
    """
    rules = []
    for rule in profile["syscalls"]:
        guarded = [name for name in rule["names"] if name in GUARDS]
        others = [name for name in rule["names"] if name not in GUARDS]
        if others:
            rules.append({**rule, "names": others})
        for name in guarded:
            split = copy.deepcopy(rule)
            split["names"] = [name]
            excluded = split.get("excludes", {}).get("caps")
            if split["action"] != "SCMP_ACT_ALLOW" and excluded and GUARDS[name] not in excluded:
                excluded.append(GUARDS[name])
            rules.append(split)
    rules += [{"names": [name], "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}}
              for name, cap in GUARDS.items()]
    return {**profile, "syscalls": rules}


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PROFILE
    json.dump(granted_to_guards(json.loads(source.read_text())), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
