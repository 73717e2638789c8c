"""A/B of the vote: the working tree's ``VoteMeasure`` against the one of a git revision.

Both score the same random queries shaped like the tiny model's CA layers (128 px: 256, 64, 16 and
4 pixels), in one process, one call each in alternating order, so the machine's drift hits both alike;
it prints each group's median paired time ratio (new / base) with quartiles, and whether the two
compute the same scores. On this project's shared 2-core machine an A/A run (the same code on both
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


def module_at(revision: str, folder: Path):
    """``hrv.accumulate`` as it was at ``revision``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/hrv/accumulate.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = folder / "accumulate_base.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("accumulate_base", path)
    module = importlib.util.module_from_spec(spec)
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
        measures = {}
        for name, module in modules.items():
            measures[name] = module.VoteMeasure(registry, bank, n_evals, "cpu")
            measures[name].set_batch(1, list(range(args.batch_size)))
        groups = measures["new"]._same_shaped(members)

        def scores(name: str, t: int, members) -> torch.Tensor:
            m = measures[name]
            return m._scores(t, members, m._group(members))

        with torch.no_grad():
            same_votes, worst = True, 0.0
            for t in range(n_evals):
                for g in groups:
                    a, b = scores("base", t, g), scores("new", t, g)
                    same_votes &= torch.equal(a.argmax(-1), b.argmax(-1))
                    worst = max(worst, float(((a - b).abs() / a.abs().clamp_min(1e-30)).max()))
            ratios: list[list[float]] = [[] for _ in groups]
            totals: dict[str, list[float]] = {"base": [], "new": []}
            for r in range(args.pairs):
                spent: dict[str, list[float]] = {}
                for name in ("base", "new") if r % 2 else ("new", "base"):
                    spent[name] = []
                    for g in groups:
                        start = time.perf_counter()
                        scores(name, r % n_evals, g)
                        spent[name].append(time.perf_counter() - start)
                    totals[name].append(sum(spent[name]))
                for i in range(len(groups)):
                    ratios[i].append(spent["new"][i] / spent["base"][i])
    print(
        f"base {args.base} vs working tree, batch {args.batch_size}, {args.pairs} pairs, {args.threads} thread(s)"
    )
    print(f"scores: largest relative difference {worst:.2e}; votes {'identical' if same_votes else 'DIFFER'}")
    for g, r in zip(groups, ratios, strict=True):
        q1, med, q3 = np.quantile(r, [0.25, 0.5, 0.75])
        print(
            f"  {len(g)} layers of {tuple(g[0][2].shape)}: new/base {med:.3f} (quartiles {q1:.3f} .. {q3:.3f})"
        )
    total = np.array(totals["new"]) / np.array(totals["base"])
    q1, med, q3 = np.quantile(total, [0.25, 0.5, 0.75])
    print(
        f"per UNet evaluation: base {np.median(totals['base']) * 1e3:.2f} ms, new {np.median(totals['new']) * 1e3:.2f}"
        f" ms (medians); new/base {med:.3f} (quartiles {q1:.3f} .. {q3:.3f})"
    )


if __name__ == "__main__":
    main()
