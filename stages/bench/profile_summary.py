"""Sums cubecl's per-kernel profiling log (`| 1.2ms      | name` lines) by kernel name and
prints the kernels that cost most, with their share of the total, for `gpu_bench.sh profile`.

    python3 stages/bench/profile_summary.py kernels.log [TOP]
"""
import collections
import re
import sys

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
LINE = re.compile(r"^\| ([0-9.]+)(ns|µs|us|ms|s)\s*\| ([^|]+)$")


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
    total, count = collections.Counter(), collections.Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        m = LINE.match(line.rstrip("\n"))
        if m:
            name = re.sub(r"\s+", " ", m.group(3).strip())[:160]
            total[name] += float(m.group(1)) * UNITS[m.group(2)]
            count[name] += 1
    whole = sum(total.values()) or 1.0
    print(f"{sum(count.values())} kernel runs, {whole * 1e3:.1f} ms in all")
    for name, secs in total.most_common(top):
        print(f"{secs * 1e3:10.2f} ms {100 * secs / whole:5.1f}% {count[name]:6}x  {name}")


if __name__ == "__main__":
    main()
