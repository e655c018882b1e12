"""Generate the fine-tuning task of docs/finetune.md: single-digit sums answered in a fixed format.

    python scripts/make_finetune_task.py OUT_DIR [--seed 0]

writes OUT_DIR/train.jsonl and OUT_DIR/test.jsonl: {"prompt": "Question: what is 3 plus 4?\\nAnswer:",
"completion": " <<7>>"} for every pair of digits, split 70/30 by a seeded shuffle (no pair in both). A base
model knows the sums but not the "<<n>>" format, so exact match before fine-tuning is near 0.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def examples() -> list[dict[str, str]]:
    return [
        {"prompt": f"Question: what is {a} plus {b}?\nAnswer:", "completion": f" <<{a + b}>>"}
        for a in range(10)
        for b in range(10)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path, help="folder to write train.jsonl and test.jsonl into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test shuffle (default 0)")
    args = parser.parse_args()
    rows = examples()
    random.Random(args.seed).shuffle(rows)
    cut = int(len(rows) * 0.7)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:cut]), ("test", rows[cut:])):
        (args.out_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    print(f"wrote {cut} training and {len(rows) - cut} test examples to {args.out_dir}")


if __name__ == "__main__":
    main()
