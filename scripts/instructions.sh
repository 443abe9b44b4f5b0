#!/usr/bin/env bash
# Instructions per epoch of minibatch training steps against the batch probe's, counted by
# valgrind on a CPU adapter (lavapipe), where a count repeats to 0.005 % and a time on this
# shared machine does not. Each count is the difference between three epochs and one, so
# start-up, data generation and shader compilation cancel out.
#
#   bash scripts/instructions.sh [--probe read|gemm] [epochs' options: --n N --d D --batch B --outputs O --unfolded --x-buffer --local-features F]
#
# Prints both counts per epoch, their ratio and the steps' extra instructions per step.
# `--probe read` counts against one read of all of X by the bandwidth probe instead of the
# batch probe: S2's roofline, for full batches (`--batch` equal to `--n`). `--probe gemm` counts
# more than one output's steps (the tiled kernels, `--outputs`) against their forward pass
# alone (S3's shape at fewer rows: `--probe gemm --n 2048 --d 1024 --batch 2048 --outputs 64`).
# `--unfolded` keeps Adam in a dispatch of its own after each step where `Auto` would fold it
# into the next.
# `--local-features F` steps with SGD on the first F features only, a local phase (S5's:
# `--probe read --n 16384 --d 1024 --batch 16384 --local-features 102`).
# `--x-buffer` reads X from its storage buffers where the steps and probes would read it from
# textures (on CPU adapters such as lavapipe).
# The first run of a build under valgrind compiles the shaders again (some 4 G instructions;
# Mesa's shader cache from a run without valgrind does not serve it): warm-up runs first.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build --release --quiet --example epochs
bin=target/release/examples/epochs
n=32768 batch=1024 probe=probe
args=()
while (($#)); do
    case "$1" in
        --probe) probe="$2"; shift 2; continue ;;
        --n) n="$2" ;;
        --batch) batch="$2" ;;
    esac
    args+=("$1")
    shift
done

count() {
    valgrind --tool=cachegrind --cache-sim=no --smc-check=all-non-file \
        --cachegrind-out-file=/dev/null "$bin" "$@" "${args[@]}" 2>&1 |
        awk '/I *refs:/ { gsub(",", "", $4); print $4 }'
}

count steps >/dev/null
count "$probe" >/dev/null
s1=$(count steps --epochs 1)
s3=$(count steps --epochs 3)
p1=$(count "$probe" --epochs 1)
p3=$(count "$probe" --epochs 3)
case "$probe" in
    read) name="read of X" ;;
    gemm) name="tiled forward pass" ;;
    *) name="batch probe" ;;
esac
awk -v s1="$s1" -v s3="$s3" -v p1="$p1" -v p3="$p3" -v steps=$(((n + batch - 1) / batch)) \
    -v name="$name" 'BEGIN {
    s = (s3 - s1) / 2; p = (p3 - p1) / 2
    printf "per epoch of %d steps: steps %.1f M instructions, %s %.1f M, ratio %.3f; ", steps, s / 1e6, name, p / 1e6, s / p
    printf "the steps'"'"' extra: %.0f k instructions per step\n", (s - p) / steps / 1e3
}'
