"""Device time of each `distill bench kernels` case, from cubecl's per-kernel profiling log.

The bench's own `kernel_us` is host time per call: burn's dispatch of the step's dozen small ops
costs ~100 µs a call, far above what the GPU spends. The profiling log times every launch on the
device; `gpu_parity.sh` writes it, and this script gives each case the median of its launches.
Each case launches the kernel `repeats + 2` times, in the order of kernels.jsonl (one warm-up
that also compiles, the timed repeats, one for the comparison), which is how lines are matched.

    python3 kernels/device_times.py PROFILE_LOG KERNELS_JSONL REPEATS
"""
import json
import re
import statistics
import sys

UNITS = {"ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
LINE = re.compile(r"^\| ([0-9.]+)(ns|µs|us|ms|s)\s*\| (.+)$")


def main():
    log, jsonl, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    times = []
    for line in open(log, encoding="utf-8", errors="replace"):
        m = LINE.match(line.rstrip("\n"))
        if m and "mamba2step" in m.group(3).lower().replace("_", ""):
            times.append(float(m.group(1)) * UNITS[m.group(2)])
    cases = [json.loads(l) for l in open(jsonl) if l.startswith("{")]
    cases = [c for c in cases if c["bench"] == "kernel_mamba2_step"]
    per = repeats + 2
    if len(times) != per * len(cases):
        print(f"device times: {len(times)} launches for {len(cases)} cases of {per}; not matched", file=sys.stderr)
        return 1
    print("device time per launch (median), against the floor at 4.3 TB/s:")
    for i, c in enumerate(cases):
        us = statistics.median(times[i * per + 1 : i * per + 1 + repeats])
        k = c["case"]
        shape = f"b{k['batch']} h{k['heads']}/{k['kv_heads']} p{k['head_dim']} n{k['d_state']}"
        print(f"mamba2_step | {shape:20} | {c['dtype']:4} | device {us:8.2f} us | floor {c['floor_us']:6.2f} us | {100 * c['floor_us'] / us:5.1f}% of bandwidth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
