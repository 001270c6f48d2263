#!/usr/bin/env python3
"""Engine benchmark: distill against DVC and Snakemake on the same machine, in the same run.

    python3 benches/engine.py [--sizes 50 100] [--repeats 5] [--hash-gib 1]

Builds `distill` in release mode, installs DVC and Snakemake from PyPI into a virtualenv
(/tmp/distill-bench-venv, reused), builds a chain of N trivial stages for each tool (stage i
appends its param to stage i-1's output), and times: the cold run, a no-op rerun, and a rerun
after changing the param of the middle stage (fresh values each time, so no tool can answer
from a run cache). Then it hashes a 1 GiB file with distill (blake3) and with Python's md5
(DVC's algorithm). Prints medians and ratios; BENCHMARKS.md records them.
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = "/tmp/distill-bench-venv"


def sh(cmd, cwd=None, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env, shell=isinstance(cmd, str), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed: {cmd}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def timed(cmd, cwd, env=None):
    t = time.perf_counter()
    sh(cmd, cwd, env)
    return time.perf_counter() - t


def setup_tools():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    distill = os.path.join(target, "release", "distill")
    if not os.path.exists(os.path.join(VENV, "bin", "snakemake")):
        sh([sys.executable, "-m", "venv", VENV])
        sh([os.path.join(VENV, "bin", "pip"), "install", "-q", "dvc", "snakemake"])
    return distill, os.path.join(VENV, "bin", "dvc"), os.path.join(VENV, "bin", "snakemake")


def distill_chain(d, n, values):
    with open(os.path.join(d, "distill.toml"), "w") as f:
        for i in range(1, n + 1):
            src = "true" if i == 1 else f"cat s{i-1}.txt"
            deps = "" if i == 1 else f'deps = ["s{i-1}.txt"]\n'
            f.write(f'[stages.s{i}]\nkind = "command"\ncmd = "({src}; echo {{{{ params.v }}}}) > s{i}.txt"\n'
                    f'{deps}outs = ["s{i}.txt"]\nparams = {{ v = "{values[i]}" }}\n\n')


def dvc_chain(d, n, values):
    with open(os.path.join(d, "params.yaml"), "w") as f:
        for i in range(1, n + 1):
            f.write(f"s{i}:\n  v: {values[i]}\n")
    with open(os.path.join(d, "dvc.yaml"), "w") as f:
        f.write("stages:\n")
        for i in range(1, n + 1):
            src = "true" if i == 1 else f"cat s{i-1}.txt"
            f.write(f"  s{i}:\n    cmd: sh -c '({src}; echo ${{s{i}.v}}) > s{i}.txt'\n    params:\n      - s{i}.v\n")
            if i > 1:
                f.write(f"    deps:\n      - s{i-1}.txt\n")
            f.write(f"    outs:\n      - s{i}.txt\n")


def snakemake_chain(d, n, values):
    with open(os.path.join(d, "Snakefile"), "w") as f:
        f.write(f'rule all:\n    input: "s{n}.txt"\n\n')
        for i in range(1, n + 1):
            f.write(f"rule s{i}:\n")
            if i > 1:
                f.write(f'    input: "s{i-1}.txt"\n')
            src = "true" if i == 1 else "cat {input}"
            f.write(f'    output: "s{i}.txt"\n    params: v="{values[i]}"\n    shell: "({src}; echo {{params.v}}) > {{output}}"\n\n')


def bench_chain(n, repeats, distill, dvc, snakemake):
    base = {i: f"v{i}" for i in range(1, n + 1)}
    tools = {
        "distill": (distill_chain, lambda: [distill, "run", "--json"]),
        "DVC": (dvc_chain, lambda: [dvc, "repro", "-q"]),
        "Snakemake": (snakemake_chain, lambda: [snakemake, "-c1", "--quiet", "all"]),
    }
    results = {}
    for name, (write, cmd) in tools.items():
        d = tempfile.mkdtemp(prefix=f"bench-{name}-")
        if name == "DVC":
            sh([dvc, "init", "--no-scm", "-q"], cwd=d)
        write(d, n, base)
        cold = timed(cmd(), d)
        noop = statistics.median(timed(cmd(), d) for _ in range(repeats))
        changes = []
        for r in range(3):
            values = dict(base)
            values[n // 2] = f"changed{r}"
            write(d, n, values)
            changes.append(timed(cmd(), d))
        results[name] = (cold, noop, statistics.median(changes))
        shutil.rmtree(d, ignore_errors=True)
    return results


def shell_cost_ms(n=50):
    """What one stage's command costs run directly, to separate it from the engine's overhead."""
    d = tempfile.mkdtemp(prefix="bench-sh-")
    with open(os.path.join(d, "in.txt"), "w") as f:
        f.write("v\n" * 25)
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(["sh", "-c", "(cat in.txt; echo v) > out.txt"], cwd=d, check=True)
    shutil.rmtree(d, ignore_errors=True)
    return (time.perf_counter() - t) / n * 1000


def bench_hash(distill, gib, repeats):
    d = tempfile.mkdtemp(prefix="bench-hash-")
    path = os.path.join(d, "big.bin")
    with open(path, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(int(gib * 1024)):
            f.write(block[i % 7:] + block[: i % 7])
    size = os.path.getsize(path)
    sh(f"cat {path} > /dev/null")  # warm the page cache for both
    ours = statistics.median(timed([distill, "hash", path], d) for _ in range(repeats))

    def md5():
        t = time.perf_counter()
        h = hashlib.md5()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return time.perf_counter() - t

    theirs = statistics.median(md5() for _ in range(repeats))
    shutil.rmtree(d, ignore_errors=True)
    return size / ours / 1e9, size / theirs / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hash-gib", type=float, default=1.0)
    args = ap.parse_args()
    distill, dvc, snakemake = setup_tools()
    print(f"machine: {os.cpu_count()} cores; DVC {sh([dvc, '--version']).strip()}, Snakemake {sh([snakemake, '--version']).strip()}")
    for n in args.sizes:
        res = bench_chain(n, args.repeats, distill, dvc, snakemake)
        rerun = n - n // 2 + 1
        print(f"\nchain of {n} stages (one param changed reruns {rerun} stages); seconds, median")
        print(f"{'tool':<10} {'cold':>8} {'no-op':>8} {'1 param':>8}   no-op ratio   1-param ratio")
        ours = res["distill"]
        for tool, (cold, noop, change) in res.items():
            print(f"{tool:<10} {cold:8.3f} {noop:8.3f} {change:8.3f}   {noop / ours[1]:8.1f}x   {change / ours[2]:8.1f}x")
        per_stage = (ours[2] - ours[1]) / rerun * 1000
        cmd_ms = shell_cost_ms()
        print(f"distill time per rerun stage {per_stage:.1f} ms, of which the stage's own sh command "
              f"{cmd_ms:.1f} ms: overhead {per_stage - cmd_ms:.1f} ms")
    ours, md5 = bench_hash(distill, args.hash_gib, 3)
    print(f"\nhashing {args.hash_gib} GiB: distill blake3 {ours:.2f} GB/s, md5 (DVC) {md5:.2f} GB/s, ratio {ours / md5:.1f}x")


if __name__ == "__main__":
    main()
