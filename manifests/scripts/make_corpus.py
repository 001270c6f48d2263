#!/usr/bin/env python3
"""Builds distill's JSONL datasets from fetched packages (standard library only).

    make_corpus.py text OUT_DIR --input DIR [--input DIR ...] [--glob '*.txt'] [--max-bytes N]
                   [--heldout 0.05] [--chunk 4000]
        -> OUT_DIR/train.jsonl, OUT_DIR/heldout.jsonl with {"text": ...} rows
    make_corpus.py prompts OUT_DIR [--chitchat FILE] [--chatterbot DIR] [--limit N] [--heldout 0.1]
        -> OUT_DIR/train.jsonl, OUT_DIR/heldout.jsonl with {"messages": [{"role": "user", ...}]}

The split is by a hash of each row's content, so adding files never moves old rows between
splits. Rows are ordered by that hash too, so the order does not depend on the file system.
"""

import argparse
import glob
import hashlib
import json
import os
import sys


def bucket(text):
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def write_split(out, rows, key, heldout):
    os.makedirs(out, exist_ok=True)
    rows = sorted(rows, key=lambda r: bucket(key(r)))
    counts = {"train": 0, "heldout": 0}
    with open(os.path.join(out, "train.jsonl"), "w") as tr, open(os.path.join(out, "heldout.jsonl"), "w") as ho:
        for r in rows:
            split = "heldout" if bucket("split:" + key(r)) < heldout else "train"
            (ho if split == "heldout" else tr).write(json.dumps(r, ensure_ascii=False) + "\n")
            counts[split] += 1
    print(json.dumps(counts))
    metrics = os.environ.get("DISTILL_METRICS")
    if metrics:
        with open(metrics, "a") as m:
            for k, v in counts.items():
                m.write(json.dumps({"name": f"rows/{k}", "value": v}) + "\n")


def chunks(text, size):
    """Paragraph-aligned pieces of about `size` characters."""
    piece = []
    n = 0
    for para in text.split("\n\n"):
        para = para.strip()
        if not para:
            continue
        piece.append(para)
        n += len(para)
        if n >= size:
            yield "\n\n".join(piece)
            piece, n = [], 0
    if piece:
        yield "\n\n".join(piece)


def text_mode(a):
    files = sorted(f for d in a.input for f in glob.glob(os.path.join(d, "**", a.glob), recursive=True))
    if not files:
        sys.exit(f"no files match {a.glob} under {a.input}")
    rows, total = [], 0
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for c in chunks(fh.read(), a.chunk):
                rows.append({"text": c})
                total += len(c)
    rows.sort(key=lambda r: bucket(r["text"]))
    kept, size = [], 0
    for r in rows:
        if a.max_bytes and size + len(r["text"]) > a.max_bytes:
            break
        kept.append(r)
        size += len(r["text"])
    write_split(a.out, kept, lambda r: r["text"], a.heldout)


def chatterbot_prompts(folder):
    for f in sorted(glob.glob(os.path.join(folder, "**", "*.yml"), recursive=True)):
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("- - "):
                    q = line[4:].strip().strip("'\"")
                    if len(q) > 3:
                        yield q


def chitchat_prompts(path):
    with open(path) as fh:
        data = json.load(fh)
    for convo in data.values():
        turns = convo.get("messages") or []
        if turns:
            text = " ".join(m.get("text", "") for m in turns[0]).strip()
            if len(text) > 3:
                yield text


def prompts_mode(a):
    seen, rows = set(), []
    sources = []
    if a.chatterbot:
        sources.append(chatterbot_prompts(a.chatterbot))
    if a.chitchat:
        sources.append(chitchat_prompts(a.chitchat))
    for src in sources:
        for q in src:
            if q.lower() not in seen:
                seen.add(q.lower())
                rows.append({"messages": [{"role": "user", "content": q}]})
    rows.sort(key=lambda r: bucket(r["messages"][0]["content"]))
    if a.limit:
        rows = rows[: a.limit]
    write_split(a.out, rows, lambda r: r["messages"][0]["content"], a.heldout)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("text")
    t.add_argument("out")
    t.add_argument("--input", action="append", required=True)
    t.add_argument("--glob", default="*.txt")
    t.add_argument("--max-bytes", type=int, default=0)
    t.add_argument("--heldout", type=float, default=0.05)
    t.add_argument("--chunk", type=int, default=4000)
    p = sub.add_parser("prompts")
    p.add_argument("out")
    p.add_argument("--chitchat")
    p.add_argument("--chatterbot")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--heldout", type=float, default=0.1)
    a = ap.parse_args()
    text_mode(a) if a.mode == "text" else prompts_mode(a)


if __name__ == "__main__":
    main()
