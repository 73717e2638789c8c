"""A/B of the vote: the working tree's ``VoteMeasure`` against the one of a git revision.

Both score the same random queries shaped like the tiny model's CA layers (128 px: 256, 64, 16 and
4 pixels) through the public interface (``record`` every layer, ``end_evaluation``, ``flush``), a
batch of 11 evaluations each in alternating order, in one process, so the machine's drift hits both
alike; it prints the median paired time ratio (new / base) with quartiles, and whether the two count
the same votes. On this project's shared 2-core machine an A/A run (the same code on both
sides) gives quartiles within about 1.5% of 1.000, where whole-run comparisons drift by 20-30%.

    python benchmarks/ab_vote.py --base HEAD            # uncommitted vote changes vs the last commit
    python benchmarks/ab_vote.py --base f71a758 --threads 2 --pairs 300
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from bench_hrv import ROOT, tiny_folder  # noqa: E402

import hrv.accumulate as current  # noqa: E402
from hrv.concepts import read_concepts  # noqa: E402
from hrv.heads import HeadRegistry  # noqa: E402
from hrv.models import load_pipeline  # noqa: E402

PIXELS_128 = [256, 256, 64, 64, 16, 16, 4, 16, 16, 16, 64, 64, 64, 256, 256, 256]  # tiny model's CA layers


def module_at(revision: str, folder: Path, name: str = "accumulate_base"):
    """``hrv.accumulate`` as it was at ``revision``, imported as module ``name`` (a distinct name
    gives a separate copy, e.g. one per variant whose paths are switched by module globals)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/hrv/accumulate.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it is executed
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git revision to compare the working tree with")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_pipeline(tiny_folder(), device="cpu", dtype="float32")
    registry = HeadRegistry.from_unet(pipe.unet)
    bank = current.WordBank.build(pipe, read_concepts(ROOT / "resources/concepts/concepts_34x10.csv"))
    gen = torch.Generator().manual_seed(0)
    members = []
    for layer, hw in zip(registry.layers, PIXELS_128, strict=True):
        attn = pipe.unet.get_submodule(layer.module_name)
        d = attn.to_q.out_features // attn.heads
        members.append((layer, attn, 0.5 * torch.randn((args.batch_size, attn.heads, hw, d), generator=gen)))
    n_evals = 11
    with tempfile.TemporaryDirectory() as tmp:
        modules = {"base": module_at(args.base, Path(tmp)), "new": current}
        measures = {
            name: module.VoteMeasure(registry, bank, n_evals, "cpu") for name, module in modules.items()
        }

        def batch(name: str) -> float:
            """Seconds to score one batch of ``n_evals`` evaluations through the public interface."""
            m = measures[name]
            m.set_batch(1, list(range(args.batch_size)))
            start = time.perf_counter()
            for t in range(n_evals):
                for layer, attn, query in members:
                    m.record(attn, layer, query)
                m.end_evaluation(t)
            m.flush()
            return time.perf_counter() - start

        with torch.no_grad():
            totals: dict[str, list[float]] = {"base": [], "new": []}
            for r in range(args.pairs):
                for name in ("base", "new") if r % 2 else ("new", "base"):
                    totals[name].append(batch(name))
    same = torch.equal(measures["base"].counts, measures["new"].counts)
    print(
        f"base {args.base} vs working tree, batch {args.batch_size}, {args.pairs} pairs of {n_evals} evaluations,"
        f" {args.threads} thread(s)"
    )
    print(f"votes {'identical' if same else 'DIFFER'}")
    ratio = np.array(totals["new"]) / np.array(totals["base"])
    q1, med, q3 = np.quantile(ratio, [0.25, 0.5, 0.75])
    base, new = (np.median(totals[k]) / n_evals * 1e3 for k in ("base", "new"))
    print(
        f"per UNet evaluation: base {base:.2f} ms, new {new:.2f} ms (medians); new/base {med:.3f}"
        f" (quartiles {q1:.3f} .. {q3:.3f})"
    )


if __name__ == "__main__":
    main()
