#!/usr/bin/env bash
# The GPU figures of issues #4 and #23 in one run on a lent device machine (see DEVELOPERS.md and the
# workspace's device tool). Nothing is built there: build here, then carry the binary and the
# Vulkan loader packages:
#
#   cargo build --release
#   echo /.gl/ >> .git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
#   apt-get $o update; (cd .gl && apt-get $o download libvulkan1)
#
# and run `bash scripts/device-bench.sh` there with carry = [".gl", "target/release/bilevel"].
# Everything it prints also lands in $OUT (devices, check, bench JSON for Auto and for each
# one-output step path).
set -uo pipefail
out="${OUT:-/tmp/bilevel-device}"
mkdir -p "$out"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
bin=target/release/bilevel
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv 2>&1 | tee "$out/gpu.txt"
"$bin" devices 2>&1 | tee "$out/devices.txt"
# Correctness first: every kernel against the CPU reference on this adapter.
timeout 120 "$bin" check > "$out/check.txt" 2>&1
echo "check: exit $?"; tail -3 "$out/check.txt"
timeout 300 "$bin" bench --repeats 7 --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
for kernels in fused rows; do
    timeout 60 "$bin" bench --shapes S2,S5 --repeats 7 --kernels "$kernels" \
        --json "$out/bench-$kernels.json" 2>&1 | tail -3
done
# Issue #23: M models of a sweep in lockstep against M one-model runs, with the arithmetic
# probe's bound.
timeout 120 "$bin" bench --sweep --repeats 5 --json "$out/bench-sweep.json" 2>&1 \
    | tee "$out/bench-sweep.txt"
