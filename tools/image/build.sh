#!/usr/bin/env bash
# Builds gespann's OCI image from Debian packages and gespann's wheel only, and tags it
# gespann:VERSION (pyproject.toml's version), the name deploy/kubernetes/*.yaml give it.
#
# A Debian 12 minbase root file system (mmdebstrap) with python3 and the Debian packages of the
# dependencies whose bookworm versions fit pyproject.toml's pins. gespann goes into the virtualenv
# /opt/gespann through tools/install-gespann.sh, the path `make run` takes too; pip fetches from
# PyPI only what Debian lacks, and is removed afterwards with everything else only the build needed:
# no compiler, LLVM, kernel headers or pip in the image. `podman import` makes the image, which
# runs as the unprivileged user `gespann` with `gespann` as its entrypoint; its BTF cache is
# /var/cache/gespann for every uid (XDG_CACHE_HOME), where the manifests mount a volume.
#
# Packages come from the archives this machine's apt already uses (its debian.sources).
#   tools/image/build.sh      (as root; `tools/setup-host.sh deploy` installs what it uses)
set -euo pipefail
cd "$(dirname "$0")/../.."

SUITE=bookworm
#: The image's user: a fixed uid, so that a runtime checking runAsNonRoot can tell without /etc/passwd.
IMAGE_UID=999
#: Debian packages of pyproject.toml's dependencies whose bookworm versions fit its pins (construct
#: 2.10.68, click 8.1.3, PyYAML 6.0), requests for datadog's wheel, and bcrypt (3.2.2) for basic auth on
#: the metrics page (its `auth` extra, imported only when configured). datadog (not packaged) comes from
#: PyPI as a wheel; pip checks every pin either way.
DEBIAN_DEPENDENCIES=python3-construct,python3-click,python3-yaml,python3-requests,python3-bcrypt
#: Present only while the image is built (python3 -m venv brings pip along): it and every package it
#: brought are purged again.
BUILD_ONLY=python3-venv
#: pip in the root file system trusts the certificates this machine trusts, for that one build.
CA_BUNDLE=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}

if [ "$(id -u)" -ne 0 ]; then
    echo "make image: needs root (mmdebstrap's root mode, podman's system image store)" >&2
    exit 1
fi
missing=()
for tool in mmdebstrap podman; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "make image: ${missing[*]} not installed; tools/setup-host.sh deploy installs them" >&2
    exit 1
fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
[ -n "$version" ] || { echo "make image: no version = \"...\" in pyproject.toml" >&2; exit 1; }
tag="gespann:$version"

work=$(mktemp -d "${TMPDIR:-/tmp}/gespann-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$(date +%s)

"${PYTHON:-python3}" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$work/wheel" .
wheel=$(echo "$work"/wheel/gespann-*.whl)
"${PYTHON:-python3}" -c 'import sys; sys.path.insert(0, "tools"); from debian_kernels import sources_for_suite
print(sources_for_suite(sys.argv[1]), end="")' "$SUITE" >"$work/debian.sources"

# Hooks get the root file system as $1. The build's files go to a directory of their own: mmdebstrap
# keeps its apt configuration in the root's /tmp until it is done. The chroot's commands see none
# of this machine's environment (its pip settings included).
inside=/tmp/gespann-build
in_root="chroot \"\$1\" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_NO_CACHE_DIR=1 PIP_CERT=$inside/ca.crt"
export GESPANN_WHEEL=$wheel CA_BUNDLE inside
mmdebstrap --quiet --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include="python3,$DEBIAN_DEPENDENCIES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='mkdir "$1$inside" && cp tools/install-gespann.sh "$GESPANN_WHEEL" "$1$inside/" && cp "$CA_BUNDLE" "$1$inside/ca.crt"' \
    --customize-hook='dpkg-query --admindir="$1/var/lib/dpkg" -W -f="\${Package}\n" | sort >"$1$inside/packages"' \
    --customize-hook="$in_root apt-get install --quiet --yes --no-install-recommends $BUILD_ONLY >/dev/null" \
    --customize-hook='dpkg-query --admindir="$1/var/lib/dpkg" -W -f="\${Package}\n" | sort | comm -13 "$1$inside/packages" - >"$1$inside/build-only"' \
    --customize-hook="$in_root PYTHON=/usr/bin/python3 bash $inside/install-gespann.sh --system-site-packages /opt/gespann $inside/$(basename "$wheel")" \
    --customize-hook="$in_root /opt/gespann/bin/python -m pip list --path /opt/gespann/lib/python3.11/site-packages --format=freeze --exclude pip --exclude setuptools | sed 's/^/image: from a wheel: /' >&2" \
    --customize-hook="$in_root /opt/gespann/bin/python -m pip uninstall --quiet --yes pip setuptools" \
    --customize-hook="$in_root sh -c 'sed \"s/^/image: build only, purged: /\" $inside/build-only >&2; xargs apt-get purge --quiet --yes <$inside/build-only >/dev/null'" \
    --customize-hook="$in_root useradd --system --uid $IMAGE_UID --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin gespann" \
    --customize-hook="$in_root install -d -o $IMAGE_UID -g $IMAGE_UID -m 0755 /var/cache/gespann" \
    --customize-hook='ln -s /opt/gespann/bin/gespann "$1/usr/local/bin/gespann" && rm -r "$1$inside"' \
    "$SUITE" "$work/rootfs.tar" "$work/debian.sources" >"$work/mmdebstrap.log" 2>&1 \
    || { cat "$work/mmdebstrap.log" >&2; echo "make image: mmdebstrap failed (its output above)" >&2; exit 1; }
grep '^image: ' "$work/mmdebstrap.log" || true

previous=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
podman import --quiet \
    --change 'ENTRYPOINT ["gespann"]' --change 'CMD ["run"]' \
    --change "USER $IMAGE_UID:$IMAGE_UID" --change 'WORKDIR /' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV XDG_CACHE_HOME=/var/cache' \
    --change "LABEL org.opencontainers.image.title=gespann org.opencontainers.image.version=$version" \
    "$work/rootfs.tar" "$tag" >/dev/null
if [ -n "$previous" ] && [ "$previous" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]; then
    podman rmi "$previous" >/dev/null 2>&1 || true   # the build it replaces, unless a container still uses it
fi
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "image: $tag built in $(( $(date +%s) - started )) s, $(( size / 1000000 )) MB ($size bytes)"
