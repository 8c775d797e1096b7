#!/usr/bin/env bash
# Builds the Debian 12 root file system that tests/deploy/test_systemd_unit.py boots with systemd as
# PID 1: minbase, systemd and dbus, and python3 with venv for the install the unit's header comment
# documents. Debian packages only, fetched from the Debian mirror this host's apt already uses.
#
#   tools/systemd-rootfs.sh DIR      (DIR: absent or empty)
set -euo pipefail

out=${1:?usage: tools/systemd-rootfs.sh DIR}
suite=bookworm
packages=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates

sources=$(mktemp --suffix=.sources)
trap 'rm -f "$sources"' EXIT
# The host's entries for this suite (and its -updates, -security), as deb822 stanzas.
python3 - "$suite" >"$sources" <<'PY'
import glob, re, sys
suite = sys.argv[1]
def ours(suites):
    return any(s == suite or s.startswith(suite + "-") for s in suites)
stanzas = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for block in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in block.splitlines():
            if line.strip() and not line.lstrip().startswith("#") and ":" in line:
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
        if fields.get("Enabled", "yes") != "no" and "deb" in fields.get("Types", "").split() \
                and ours(fields.get("Suites", "").split()):
            fields["Types"] = "deb"
            stanzas.append(fields)
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(words) >= 4 and words[0] == "deb" and ours([words[2]]):
            stanzas.append({"Types": "deb", "URIs": words[1], "Suites": words[2], "Components": " ".join(words[3:])})
if not stanzas:
    sys.exit(f"systemd-rootfs: no apt source for {suite} in /etc/apt/sources.list*")
print("\n\n".join("\n".join(f"{k}: {v}" for k, v in s.items()) for s in stanzas))
PY

mmdebstrap --quiet --variant=minbase --include="$packages" "$suite" "$out" "$sources"
