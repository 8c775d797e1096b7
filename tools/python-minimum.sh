#!/usr/bin/env bash
# Prints the path of an interpreter of the oldest Python that gespann declares (pyproject.toml's
# requires-python), so that `make test` proves that version and not only the machine's newer one.
# Looks for pythonX.Y on PATH, then in pyenv's versions. Exits 1, saying so, when there is none.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^requires-python = ">=\([0-9]*\.[0-9]*\)".*/\1/p' pyproject.toml)
if [ -z "$version" ]; then
    echo "python-minimum: pyproject.toml has no requires-python = \">=X.Y\"" >&2
    exit 1
fi
candidates=()
command -v "python$version" >/dev/null 2>&1 && candidates+=("$(command -v "python$version")")
for root in "${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv; do
    [ -n "$root" ] && [ -d "$root/versions" ] || continue
    for found in "$root"/versions/"$version".*/bin/"python$version"; do
        [ -x "$found" ] && candidates+=("$found")
    done
done
for python in "${candidates[@]}"; do
    if "$python" -c "import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null; then
        echo "$python"
        exit 0
    fi
done
echo "python-minimum: no Python $version with venv and ensurepip found (python$version on PATH, or pyenv's versions/$version.*)" >&2
exit 1
