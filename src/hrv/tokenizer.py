"""The real CLIP tokenizer, built offline from the BPE vocabulary that ``open_clip`` ships.

SD v1.x, v2.x and SDXL all use the CLIP BPE (49,408 tokens). ``open_clip`` carries the merges
file, so the Hugging Face tokenizer files (``vocab.json``, ``merges.txt``) can be written without
a model hub. open_clip names the special tokens ``<start_of_text>``/``<end_of_text>``; the
Hugging Face files use ``<|startoftext|>``/``<|endoftext|>`` with the same ids (49406, 49407).
"""

from __future__ import annotations

import json
from pathlib import Path

_SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of the CLIP BPE tokenizer into ``folder``."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {_SPECIAL.get(tok, tok): idx for tok, idx in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks.items(), key=lambda item: item[1])
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for (a, b), _ in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def build_clip_tokenizer(folder: str | Path):
    """A ``transformers.CLIPTokenizer`` with SD's settings (pad with ``<|endoftext|>``, 77 tokens)."""
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer_files(folder)
    # from_pretrained reads vocab.json + merges.txt in transformers 4 and 5 alike
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77, pad_token="<|endoftext|>")
