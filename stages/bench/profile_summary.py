"""Sums cubecl's per-kernel profiling log (`| 1.2ms      | Name | Args_hash` lines) by kernel
and prints those that cost most, with their share, for `gpu_bench.sh profile`. Each kernel's
first run is left out: it includes the kernel's compilation (seconds for a large fused one).

    python3 stages/bench/profile_summary.py kernels.log [TOP]
"""
import collections
import re
import sys

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
LINE = re.compile(r"^\| ([0-9.]+)(ns|µs|us|ms|s)\s*\| (.+)$")


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    seen, total, count, family = set(), collections.Counter(), collections.Counter(), collections.Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        m = LINE.match(line.rstrip("\n"))
        if not m:
            continue
        name = re.sub(r"\s+", " ", m.group(3).strip())
        if name not in seen:
            seen.add(name)
            continue
        secs = float(m.group(1)) * UNITS[m.group(2)]
        total[name] += secs
        count[name] += 1
        family[re.sub(r"_[0-9a-f]+$", "", name.split(" | ")[0])] += secs
    whole = sum(total.values()) or 1.0
    print(f"{sum(count.values())} kernel runs after each one's first, {whole * 1e3:.1f} ms in all")
    print("by kind:")
    for name, secs in family.most_common(15):
        print(f"{secs * 1e3:10.2f} ms {100 * secs / whole:5.1f}%  {name}")
    print("by kernel:")
    for name, secs in total.most_common(top):
        short = name if len(name) < 100 else name[:60] + " ... " + name[-35:]
        print(f"{secs * 1e3:10.2f} ms {100 * secs / whole:5.1f}% {count[name]:6}x {secs / count[name] * 1e3:8.3f} ms  {short}")


if __name__ == "__main__":
    main()
