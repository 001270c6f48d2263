"""Writes the tiny Parquet fixtures the data reader is tested on, shaped like Hugging Face
datasets ship them (pyarrow, row groups, snappy and zstd compression):

    pip install pyarrow && python3 tests/golden/make_parquet_golden.py

parquet/text.snappy.parquet   {"text"} rows, two row groups, one null text (a bad row)
parquet/chat.zstd.parquet     {"messages": [{"role", "content"}...]} rows (list<struct>), plus
                              an extra column ("source") that readers ignore
parquet/pairs.snappy.parquet  {"prompt", "chosen", "rejected"} with message-list answers, as
                              UltraFeedback-binarized has them
"""
import os

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parquet")
os.makedirs(HERE, exist_ok=True)

text = pa.table({"text": ["the cat sat", "on the mat", None, "dogs run far", "héllo wörld"]})
pq.write_table(text, os.path.join(HERE, "text.snappy.parquet"), compression="snappy", row_group_size=3)


def turn(role, content):
    return {"role": role, "content": content}


chat = pa.table({
    "messages": [
        [turn("user", "hi"), turn("assistant", "hello")],
        [turn("system", "be brief"), turn("user", "2+2?"), turn("assistant", "4")],
    ],
    "source": ["a", "b"],
})
pq.write_table(chat, os.path.join(HERE, "chat.zstd.parquet"), compression="zstd")

pairs = pa.table({
    "prompt": ["2+2?", "capital of France?"],
    "chosen": [[turn("user", "2+2?"), turn("assistant", "4")], [turn("user", "capital of France?"), turn("assistant", "Paris")]],
    "rejected": [[turn("user", "2+2?"), turn("assistant", "5")], [turn("user", "capital of France?"), turn("assistant", "Lyon")]],
})
pq.write_table(pairs, os.path.join(HERE, "pairs.snappy.parquet"), compression="snappy")
