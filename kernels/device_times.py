"""Device time of each `distill bench kernels` case, from cubecl's per-kernel profiling log.

The bench's own `kernel_us` is host time: burn's dispatch of a kernel's dozen small ops costs
~100-150 µs a call, far above what the GPU spends. The profiling log times every launch on the
device; `gpu_parity.sh` writes it, and this script gives each case the median of its launches.
Each case launches its kernel `repeats + 2` times, in the order of kernels.jsonl (one warm-up
that also compiles, the timed repeats, one for the comparison), a multi-step case two more (the
every-state launch and the single step it is checked against), which is how lines are matched,
kernel by kernel. It also sets each verification (K + 1 = 5 steps in one launch) against one
decode step of the same shape, the issue's "at most 1.3x".

    python3 kernels/device_times.py PROFILE_LOG KERNELS_JSONL REPEATS
"""
import json
import re
import statistics
import sys

UNITS = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
LINE = re.compile(r"^\| ([0-9.]+)(ns|µs|us|ms|s)\s*\| (.+)$")
# Kernel names in the log, and the bench rows whose launches they are (the single step runs the
# multi-step kernel with one step), in either layout.
KERNELS = {"Mamba2StepsKernel"}
GEMV_KERNELS = {"GemvPartialKernel", "GemvSumKernel", "GemvRowsKernel"}
BENCHES = {"kernel_mamba2_step", "kernel_mamba2_steps"}


def shape(c):
    k = c["case"]
    return f"b{k['batch']} h{k['heads']}/{k['kv_heads']} p{k['head_dim']} n{k['d_state']}"


def main():
    log, jsonl, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    times = []
    gemv = []  # (family, us) of the decode products' two launches, in order
    for line in open(log, encoding="utf-8", errors="replace"):
        m = LINE.match(line.rstrip("\n"))
        if m:
            name = m.group(3).split("|")[0].strip()
            family = re.sub(r"_[0-9a-f]+$", "", name)
            if family in KERNELS:
                times.append(float(m.group(1)) * UNITS[m.group(2)])
            elif family in GEMV_KERNELS:
                gemv.append((family, float(m.group(1)) * UNITS[m.group(2)]))
    rows = [json.loads(l) for l in open(jsonl) if l.startswith("{")]
    per = repeats + 2
    single = {}
    print("device time per launch (median), against the floor at 4.3 TB/s:")
    cases = [c for c in rows if c["bench"] in BENCHES]
    launches = [per + (2 if c["bench"] == "kernel_mamba2_steps" else 0) for c in cases]
    if len(times) != sum(launches):
        print(f"{len(times)} launches of {sorted(KERNELS)} for {len(cases)} cases ({sum(launches)} expected); not matched", file=sys.stderr)
        return 1
    first = 0
    for c, count in zip(cases, launches):
        us = statistics.median(times[first + 1 : first + 1 + repeats])
        first += count
        steps = c.get("steps")
        label = "mamba2_step " if steps is None else f"mamba2_steps x{steps}"
        extra = ""
        if steps is None:
            single[(shape(c), c["dtype"])] = us
        elif (shape(c), c["dtype"]) in single:
            extra = f" | {us / single[(shape(c), c['dtype'])]:.2f}x one step"
        print(f"{label} | {shape(c):20} | {c['dtype']:4} | device {us:8.2f} us | floor {c['floor_us']:6.2f} us | {100 * c['floor_us'] / us:5.1f}% of bandwidth{extra}")
    return gemv_times(gemv, [c for c in rows if c["bench"] == "kernel_gemv"], [c for c in rows if c["bench"] == "kernel_attention"], per, repeats)


def gemv_times(launches, cases, attention, per, repeats):
    """Each decode product's two launches (partial sums, then their sum) added, against the
    weight's bytes at 4.3 TB/s; then each decoding attention's two products (the scores' rows
    launch, the values' partial sums and sum) added, against its keys' and values' bytes (the
    softmax between them is a reduction, not counted here). The gemv group runs before the
    attention group."""
    # A contiguous weight is two launches (partial sums, their sum), a transposed one one.
    calls, i = [], 0
    while i < len(launches):
        if launches[i][0] == "GemvPartialKernel" and i + 1 < len(launches) and launches[i + 1][0] == "GemvSumKernel":
            calls.append(launches[i][1] + launches[i + 1][1])
            i += 2
        else:
            calls.append(launches[i][1])
            i += 1
    products = per * len(cases)
    if len(calls) != products + 2 * per * len(attention):
        print(f"{len(calls)} gemv calls for {len(cases)} product cases and {len(attention)} attention cases of {per}; not matched", file=sys.stderr)
        return 1
    for i, c in enumerate(cases):
        us = statistics.median(calls[i * per + 1 : i * per + 1 + repeats])
        t = " (transposed)" if c.get("transposed") else ""
        print(f"gemv | {c['rows']}x{c['d_in']}->{c['d_out']}{t:<14} | {c['dtype']:4} | device {us:8.2f} us | weight floor {c['floor_us']:6.2f} us | {100 * c['floor_us'] / us:5.1f}% of bandwidth")
    pairs = [calls[j] + calls[j + 1] for j in range(products, len(calls), 2)]
    for i, c in enumerate(attention):
        us = statistics.median(pairs[i * per + 1 : i * per + 1 + repeats])
        shape = f"b{c['batch']} kv{c['kv_heads']} rows {c['rows']} keys {c['keys']} d{c['head_dim']}"
        print(f"attention products | {shape:32} | {c['dtype']:4} | device {us:8.2f} us | keys+values floor {c['floor_us']:6.2f} us | {100 * c['floor_us'] / us:5.1f}% of bandwidth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
