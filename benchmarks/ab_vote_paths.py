"""What each CPU-only path of the vote gains, on SD v1.4's architecture at 256 px (issue 14).

The vote of git revision ``--base`` (before issue 14 it had three paths that only the CPU took:
exp without max subtraction where logits are bounded, packed token slots with overflowing pairs
scored again, and evaluations held back to be scored together) runs as it is and with each path
switched off in turn, beside the working tree's vote, on the same random queries shaped like SD
v1.4's 16 CA layers at 256 px (1024, 256, 64 and 16 pixels; 8 heads of 40, 80 or 160 dims). Every
variant scores a batch of ``--evals`` evaluations through the public interface (``record``,
``end_evaluation``, ``flush``) in a rotating order, in one process, so that the machine's drift
hits all alike. It prints each variant's median time per batch over the base's (with quartiles of
the paired ratios) and whether all count the same votes.

The keys come from SD v1.4's CA ``to_k`` shapes (768 -> 320, 640, 1280) with random weights, and
the word bank has the tiny pipeline's token layout for the paper's 34 concepts with random
768-dim embeddings: the vote's cost depends on shapes, not on trained weights.

    python benchmarks/ab_vote_paths.py --base adcf1fb --rounds 40
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
warnings.filterwarnings("ignore")

from ab_vote import module_at  # noqa: E402
from bench_hrv import ROOT, tiny_folder  # noqa: E402

import hrv.accumulate as current  # noqa: E402
from hrv.archs import meta_unet  # noqa: E402
from hrv.concepts import read_concepts  # noqa: E402
from hrv.heads import HeadRegistry  # noqa: E402
from hrv.models import load_pipeline  # noqa: E402

# SD v1.4's CA layers at 256 px (a 32 x 32 latent), in execution order
PIXELS_256 = [1024, 1024, 256, 256, 64, 64, 16, 64, 64, 64, 256, 256, 256, 1024, 1024, 1024]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="adcf1fb", help="git revision of the vote with the CPU-only paths")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--evals", type=int, default=11)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tiny = load_pipeline(tiny_folder(), device="cpu", dtype="float32")
    concepts = read_concepts(ROOT / "resources/concepts/concepts_34x10.csv")
    bank = current.WordBank.build(tiny, concepts)
    gen = torch.Generator().manual_seed(0)
    bank.embeddings = torch.randn((bank.embeddings.shape[0], 768), generator=gen)
    unet = meta_unet("sd14")
    registry = HeadRegistry.from_unet(unet)
    members = []
    for layer, hw in zip(registry.layers, PIXELS_256, strict=True):
        attn = unet.get_submodule(layer.module_name)
        attn.to_k = torch.nn.Linear(768, attn.to_k.out_features, bias=False)  # random, on the CPU
        d = attn.to_k.out_features // attn.heads
        members.append((layer, attn, 0.5 * torch.randn((args.batch_size, attn.heads, hw, d), generator=gen)))

    with tempfile.TemporaryDirectory() as tmp:
        variants = {}
        for name in ("base", "no_exp", "no_packed", "no_held_back", "none"):
            variants[name] = module_at(args.base, Path(tmp), f"accumulate_{name}")
        full_width = 1 + int(bank.n_tokens.max(axis=1).sum())
        for name in ("no_exp", "none"):  # every head the exact softmax (the GPU's path)
            variants[name].exp_path = lambda device: False
        for name in ("no_held_back", "none"):  # each evaluation scored when it ends
            variants[name]._DEFER_ELEMENTS = 0
        variants["tree"] = current

        def measure_of(name: str):
            m = variants[name].VoteMeasure(registry, bank, args.evals, "cpu")
            if name == "no_exp":  # packed slots kept (its __init__ ties them to the exp path)
                m._packed_width = variants[name].packed_width(bank, variants[name]._OVERFLOW)
            if name == "no_packed":
                m._packed_width = full_width
            return m

        measures = {name: measure_of(name) for name in variants}
        print({name: getattr(m, "_packed_width", "-") for name, m in measures.items()}, "slots")

        def batch(name: str) -> float:
            m = measures[name]
            m.set_batch(1, list(range(args.batch_size)))
            start = time.perf_counter()
            for t in range(args.evals):
                for layer, attn, query in members:
                    m.record(attn, layer, query)
                m.end_evaluation(t)
            m.flush()
            return time.perf_counter() - start

        names = list(variants)
        totals: dict[str, list[float]] = {name: [] for name in names}
        with torch.no_grad():
            for name in names:  # warm-up: key caches, group tables
                batch(name)
            for r in range(args.rounds):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    totals[name].append(batch(name))
    base = measures["base"].counts
    print(
        f"SD v1.4 architecture, 256 px, batch {args.batch_size}, {args.evals} evaluations per batch,"
        f" {args.rounds} rounds, {args.threads} thread(s); base {args.base}"
    )
    differ = {n: int((m.counts != base).sum()) for n, m in measures.items()}
    print(
        f"cells (evaluation, concept, head) whose count differs from the base's, of {base.numel()}: {differ}"
    )
    b = np.array(totals["base"])
    for name in names:
        t = np.array(totals[name])
        q1, med, q3 = np.quantile(t / b, [0.25, 0.5, 0.75])
        print(
            f"{name:13s} {np.median(t) / args.evals * 1e3:7.2f} ms per evaluation;"
            f" / base {med:.3f} (quartiles {q1:.3f} .. {q3:.3f})"
        )


if __name__ == "__main__":
    main()
