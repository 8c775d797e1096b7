#!/usr/bin/env bash
# Installs the Debian packages that gespann's tests use as oracles and peers.
# None of them is needed at runtime. Idempotent: does nothing when all are present.
# `setup-host.sh matrix` adds what the kernel matrix (VMs) needs; `setup-host.sh bench`, that and the bench's peers;
# `setup-host.sh deploy`, what builds the image and runs the deployment tests.
# `setup-host.sh systemd`, what tests/deploy/test_systemd_unit.py needs to build and boot a Debian with systemd.
set -euo pipefail

packages=(
    llvm-19          # llvm-mc / llvm-objdump: oracles for the assembler (cpu v4 needs LLVM >= 18)
    bpftool          # oracle for BTF and for "nothing stays loaded"
    iproute2         # ip netns / veth for namespace tests
    nftables
    zstd             # the tools that build vendored_vmlinux tables unpack zstd-compressed kernels
    prometheus       # a real Prometheus scrapes gespann in the exporter tests (never started as a service)
    prometheus-node-exporter  # the metrics page's attack tests measure it beside gespann (started on a free port)
    libcap2-bin      # capsh: the least-privilege tests drop capabilities
    openssl          # throwaway certificates for the metrics page over TLS (tests/exporters)
    nginx-light      # backends behind a Service-like DNAT (tests/collector/test_peers_nat.py)
    curl             # ... and the client that dials the Service
    apache2-utils    # ... and ab, the load of many connections through it
    gcc              # tests/collector/test_tcp_peers.py builds tools/bench/loadgen.c for its churn
)
if [ "${1:-}" = "matrix" ] || [ "${1:-}" = "bench" ]; then   # Debian kernels booted under qemu with virtme-ng
    packages+=(qemu-system-x86 kmod busybox-static)
fi
if [ "${1:-}" = "systemd" ]; then   # a Debian 12 root file system, booted with systemd as PID 1 in a container
    packages+=(mmdebstrap systemd-container)
fi
if [ "${1:-}" = "bench" ]; then   # tools/bench.py: the peers, and gcc for its load generator
    packages+=(bpftrace bpfcc-tools libbpf-tools gcc)
fi
if [ "${1:-}" = "deploy" ]; then   # make image (mmdebstrap, podman import) and tests/deploy (podman kube play)
    packages+=(mmdebstrap podman crun catatonit)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
fi
echo "setup-host: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
