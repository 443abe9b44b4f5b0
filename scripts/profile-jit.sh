#!/usr/bin/env bash
# Where a CPU adapter's (lavapipe's) time goes inside the shader code it compiled: samples an
# `examples/epochs` workload with perf, copies the compiled code out of the live process with
# gdb, disassembles it and prints the samples' share per compiled function, the instruction
# mix of the hottest, and its hottest instructions with the code around them. perf alone
# cannot: the code has no symbols and is gone when the process exits.
#
#   bash scripts/profile-jit.sh [--seconds S] <epochs' arguments>
#   bash scripts/profile-jit.sh gemm --n 2048 --d 1024 --batch 2048 --outputs 64 --epochs 3000
#
# The workload must run for a few seconds past its start-up plus S (default 4): give it
# epochs enough. Needs perf and gdb (apt-get install linux-perf gdb) and
# kernel.perf_event_paranoid ≤ 2. Leaves perf.data, jit.bin (the code) and jit.asm in a
# temporary folder it names.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in perf gdb objdump python3; do
    command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install linux-perf gdb binutils python3" >&2; exit 1; }
done
seconds=4
if [ "${1:-}" = --seconds ]; then seconds="$2"; shift 2; fi
(($#)) || { sed -n '2,15p' "$0" >&2; exit 2; }
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo build --release --quiet --example epochs
dir=$(mktemp -d)
target/release/examples/epochs "$@" >"$dir/run.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
# Past data generation and shader compilation.
sleep 3
kill -0 $pid 2>/dev/null || { echo "the workload ended before sampling: give it more epochs" >&2; exit 1; }
perf record -q -e cpu-clock -F 4000 -p $pid -o "$dir/perf.data" -- sleep "$seconds" >/dev/null 2>&1
cp "/proc/$pid/maps" "$dir/maps.txt"
perf script -i "$dir/perf.data" -F ip 2>/dev/null >"$dir/ips.txt"
# The compiled code: the anonymous executable mapping holding the most samples.
read -r start end < <(python3 - "$dir" <<'PY'
import bisect, collections, sys
d = sys.argv[1]
maps = []
for line in open(f"{d}/maps.txt"):
    f = line.split()
    if "x" in f[1] and len(f) < 6:
        a, b = (int(v, 16) for v in f[0].split("-"))
        maps.append((a, b))
maps.sort()
hits = collections.Counter()
for line in open(f"{d}/ips.txt"):
    ip = int(line, 16)
    i = bisect.bisect_right(maps, (ip, float("inf"))) - 1
    if i >= 0 and maps[i][0] <= ip < maps[i][1]:
        hits[maps[i]] += 1
(a, b), _ = hits.most_common(1)[0]
print(hex(a), hex(b))
PY
)
gdb -p $pid -batch -ex "dump binary memory $dir/jit.bin $start $end" >/dev/null 2>&1
kill $pid 2>/dev/null || true
objdump -D -b binary -m i386:x86-64 --adjust-vma="$start" "$dir/jit.bin" >"$dir/jit.asm"
python3 - "$dir" <<'PY'
import bisect, collections, re, sys
d = sys.argv[1]
samples = collections.Counter(int(line, 16) for line in open(f"{d}/ips.txt"))
total = sum(samples.values())
code = []
for line in open(f"{d}/jit.asm"):
    m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(\S.*)", line)
    if m:
        code.append((int(m.group(1), 16), m.group(2)))
# Functions start after a `ret` and its padding.
starts, after_ret = [code[0][0]], False
for addr, text in code:
    op = text.split()[0]
    if after_ret and op not in ("ret", "nop", "nopl", "nopw", "xchg", "data16", "int3"):
        starts.append(addr)
        after_ret = False
    after_ret |= op == "ret"
def function(addr):
    return starts[bisect.bisect_right(starts, addr) - 1]
per_function = collections.Counter()
for ip, n in samples.items():
    if code[0][0] <= ip <= code[-1][0]:
        per_function[function(ip)] += n
print(f"{total} samples, {sum(per_function.values()) / total:.1%} in the compiled code ({d})")
for f, n in per_function.most_common(6):
    size = sum(1 for a, _ in code if function(a) == f)
    print(f"  function at {f:#x} ({size} instructions): {n / total:.1%}")
hottest = per_function.most_common(1)[0][0]
body = [(a, t) for a, t in code if function(a) == hottest]
mix = collections.Counter()
for a, t in body:
    mix[t.split()[0]] += samples.get(a, 0)
print("hottest function's samples by opcode:",
      ", ".join(f"{op} {n / total:.1%}" for op, n in mix.most_common(12)))
print("its hottest instructions (share of all samples), with the code before them:")
index = {a: i for i, (a, _) in enumerate(body)}
for ip, n in sorted(((a, samples[a]) for a, _ in body if samples.get(a)), key=lambda x: -x[1])[:3]:
    i = index[ip]
    for a, t in body[max(0, i - 6):i + 2]:
        mark = ">" if a == ip else " "
        print(f"  {mark} {samples.get(a, 0) / total:6.1%}  {a:#x}  {t}")
    print()
PY
