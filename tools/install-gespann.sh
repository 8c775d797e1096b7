#!/usr/bin/env bash
# Installs gespann and the dependencies it needs to run, nothing else (no test or bench extra), into a
# virtualenv. The one install path shared by `make run` (an editable install of the checkout) and the
# image (tools/image/build.sh, inside its Debian root file system, from gespann's wheel), so that both
# run what pyproject.toml's `dependencies` resolve to.
#
#   tools/install-gespann.sh [--system-site-packages] VENV SOURCE...
#
# SOURCE: pip's arguments for gespann, e.g. `-e .` or a wheel. --system-site-packages lets Debian's
# python3-* packages satisfy the dependencies their versions fit; pip fetches the others as wheels.
set -euo pipefail

venv_options=()
if [ "${1:-}" = "--system-site-packages" ]; then
    venv_options+=(--system-site-packages)
    shift
fi
if [ $# -lt 2 ]; then
    echo "usage: $0 [--system-site-packages] VENV SOURCE..." >&2
    exit 2
fi
venv=$1
shift
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "${venv_options[@]}" "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
# Bytecode now, for gespann and everything in the virtualenv: a start that compiles source instead
# (where PYTHONDONTWRITEBYTECODE is set, every start) takes longer and peaks a few MiB higher.
"$venv/bin/python" - <<'COMPILE'
import compileall, os, sysconfig
import asm, gespann
for path in {sysconfig.get_paths()["purelib"], os.path.dirname(gespann.__file__), os.path.dirname(asm.__file__)}:
    compileall.compile_dir(path, quiet=1, workers=0)
COMPILE
