"""The accumulation against a plain reference (explicit loops, spec section 1), a planted head,
invariance to sharding and batching, and generation left untouched."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from helpers_reference import readme_latent

from hrv.accumulate import WordBank, accumulate, word_choices
from hrv.attention import Controller, installed
from hrv.concepts import ConceptSet
from hrv.determinism import make_batch_invariant
from hrv.errors import HRVInputError
from hrv.heads import HeadRegistry
from hrv.models import initial_latents

SAMPLING = dict(steps=3, guidance_scale=7.5, height=128, width=128)
PROMPTS = ["a photo of a tench.", "a red car parked by the sea", "an old castle at night, oil painting"]


def reference_counts(pipe, concepts: ConceptSet, prompts, seed, keep_sot=True):
    """Spec section 1 written out with loops in float64; also returns each vote's top-2 margin."""
    make_batch_invariant(pipe)  # same sampling trajectories as the accumulation
    registry = HeadRegistry.from_unet(pipe.unet)
    tok, enc = pipe.tokenizer, pipe.text_encoder

    def encode_alone(word):
        ids = tok(word, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            hidden = enc(ids.to(pipe.device))[0][0].double()
        n = len(tok(word, add_special_tokens=False).input_ids)
        return hidden[0], hidden[1 : 1 + n]

    sot = encode_alone(concepts.words[0][0])[0]
    word_tokens = [[encode_alone(w)[1] for w in ws] for ws in concepts.words]
    n_words = np.array([len(ws) for ws in concepts.words])

    records: dict[tuple[int, int], torch.Tensor] = {}
    step = [0]
    hooks = [pipe.unet.register_forward_hook(lambda *a: step.__setitem__(0, step[0] + 1))]
    for layer in registry.layers:
        module = pipe.unet.get_submodule(layer.module_name)
        hooks.append(
            module.register_forward_pre_hook(
                lambda m, args, pos=layer.position: records.__setitem__(
                    (step[0], pos), args[0][-1].detach().double()
                )
            )
        )
    n_evals = SAMPLING["steps"] + 1  # PNDM with skip_prk_steps repeats its first timestep
    counts = np.zeros((n_evals, len(concepts), registry.n_heads), dtype=np.int64)
    margins = []
    try:
        torch.set_grad_enabled(False)
        for i, prompt in enumerate(prompts):
            records.clear()
            step[0] = 0
            with torch.no_grad():
                pipe(
                    prompt,
                    latents=readme_latent(pipe, seed + i, 128, 128),  # the README's formula
                    output_type="latent",
                    **{k: SAMPLING[k] for k in ("guidance_scale", "height", "width")},
                    num_inference_steps=SAMPLING["steps"],
                )
            assert step[0] == n_evals
            for (t, pos), x in records.items():
                layer = registry.layers[pos]
                attn = pipe.unet.get_submodule(layer.module_name)
                q = x @ attn.to_q.weight.double().T  # (HW, inner)
                table = np.random.default_rng([seed, i]).integers(
                    0, n_words, size=(n_evals, len(registry.layers), len(n_words))
                )
                choice = table[t, pos]
                seq = [sot[None]] if keep_sot else []
                owner = [-1] if keep_sot else []
                for c in range(len(concepts)):
                    toks = word_tokens[c][choice[c]]
                    seq.append(toks)
                    owner += [c] * len(toks)
                k = torch.cat(seq) @ attn.to_k.weight.double().T
                owner = np.array(owner)
                d = q.shape[1] // layer.heads
                for h in range(layer.heads):
                    qh, kh = q[:, h * d : (h + 1) * d], k[:, h * d : (h + 1) * d]
                    p = torch.softmax(qh @ kh.T / math.sqrt(d), dim=-1).mean(dim=0).numpy()
                    scores = np.array([p[owner == c].mean() for c in range(len(concepts))])
                    top = np.sort(scores)[-2:]
                    margins.append((t, int(np.argmax(scores)), layer.offset + h, top[1] - top[0]))
                    counts[t, int(np.argmax(scores)), layer.offset + h] += 1
    finally:
        torch.set_grad_enabled(True)
        for hook in hooks:
            hook.remove()
    return counts, margins


@pytest.mark.parametrize(("keep_sot", "overflow"), [(True, 0.01), (False, 0.01), (True, 1.0)])
def test_matches_plain_reference(tiny_pipe, concepts, monkeypatch, keep_sot, overflow):
    """``overflow`` 1.0 packs 8 slots, too few for any draw: every pair is scored in the full layout."""
    import hrv.accumulate as acc

    monkeypatch.setattr(acc, "_OVERFLOW", overflow)
    got = accumulate(
        tiny_pipe,
        concepts,
        PROMPTS,
        range(3),
        seed=5,
        batch_size=2,
        keep_sot=keep_sot,
        progress=False,
        **SAMPLING,
    )
    want, margins = reference_counts(tiny_pipe, concepts, PROMPTS, seed=5, keep_sot=keep_sot)
    assert got.shape == want.shape == (4, 34, 128)
    assert got.sum() == 3 * 4 * 128  # one vote per (prompt, evaluation, head)
    # votes are argmaxes: float32 vs float64 may only disagree where the reference's top two tie
    mismatched = np.argwhere(got != want)
    decisive = {(t, c, h) for t, c, h, m in margins if m > 1e-5}
    assert not any(tuple(idx) in decisive and got[tuple(idx)] != want[tuple(idx)] for idx in mismatched)
    assert len(mismatched) <= 4


def test_sot_changes_votes(tiny_pipe, concepts):
    kw = dict(seed=1, batch_size=3, progress=False, **SAMPLING)
    with_sot = accumulate(tiny_pipe, concepts, PROMPTS, range(3), keep_sot=True, **kw)
    without = accumulate(tiny_pipe, concepts, PROMPTS, range(3), keep_sot=False, **kw)
    assert with_sot.sum() == without.sum() and not np.array_equal(with_sot, without)


def test_shard_and_batch_invariance(tiny_pipe, concepts):
    prompts = PROMPTS + ["a bowl of lemons", "two dogs playing in snow"]
    kw = dict(seed=3, progress=False, **SAMPLING)
    one = accumulate(tiny_pipe, concepts, prompts, range(5), batch_size=1, **kw)
    batched = accumulate(tiny_pipe, concepts, prompts, range(5), batch_size=4, **kw)
    sharded = accumulate(tiny_pipe, concepts, prompts, range(0, 2), batch_size=2, **kw) + accumulate(
        tiny_pipe, concepts, prompts, range(2, 5), batch_size=3, **kw
    )
    assert np.array_equal(one, batched) and np.array_equal(one, sharded)
    again = accumulate(tiny_pipe, concepts, prompts, range(5), batch_size=4, **kw)
    assert np.array_equal(batched, again)


def test_votes_do_not_depend_on_how_layers_are_grouped(tiny_pipe, concepts, monkeypatch):
    """A UNet evaluation's layers of one shape are scored together, in groups cut by the size of their
    logits: cutting them smaller gives the same counts."""
    import hrv.accumulate as acc

    kw = dict(seed=4, progress=False, batch_size=2, **SAMPLING)
    scored = []
    real_vote = acc.VoteMeasure._vote
    monkeypatch.setattr(
        acc.VoteMeasure, "_vote", lambda m, members: scored.append(members) or real_vote(m, members)
    )

    def run(group_elements: int) -> tuple[np.ndarray, int]:
        monkeypatch.setattr(acc, "_GROUP_ELEMENTS", group_elements)
        scored.clear()
        counts = accumulate(tiny_pipe, concepts, PROMPTS, range(3), **kw)
        assert all(len({m.t for m in g}) == 1 for g in scored)  # each evaluation scored when it ends
        return counts, max(len(g) for g in scored)

    whole, largest = run(acc._GROUP_ELEMENTS)
    cut, size = run(2**14)  # one layer per group (but the 4-pixel one)
    assert size < largest and np.array_equal(whole, cut)


def test_strict_invariance_runs_every_dense_layer_and_convolution_per_sample(tiny_model_dir, concepts):
    """``strict`` (for GPUs, whose kernels depend on the batch size) computes each batch element on
    its own. The CPU shows the difference too: a convolution over a batch of one rounds differently
    from the same rows in a larger batch, unless each sample runs alone."""
    from hrv.models import load_pipeline

    pipe = load_pipeline(tiny_model_dir, device="cpu", dtype="float32")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((4, 4, 16, 16), generator=gen)
    emb = torch.randn((4, 77, pipe.unet.config.cross_attention_dim), generator=gen)

    def alone_equals_batched() -> bool:
        with torch.no_grad():
            whole = pipe.unet(x, 500, encoder_hidden_states=emb).sample
            return all(
                torch.equal(
                    whole[i : i + 1],
                    pipe.unet(x[i : i + 1], 500, encoder_hidden_states=emb[i : i + 1]).sample,
                )
                for i in range(4)
            )

    make_batch_invariant(pipe)
    assert not alone_equals_batched()  # what strict mode is for (shown here by the CPU's batch of one)
    make_batch_invariant(pipe, strict=True)
    assert alone_equals_batched()
    make_batch_invariant(pipe)  # idempotent: a later default call keeps the stricter patches
    assert alone_equals_batched()

    kw = dict(seed=3, progress=False, batch_invariant="strict", **SAMPLING)
    one = accumulate(pipe, concepts, PROMPTS, range(3), batch_size=1, **kw)
    assert np.array_equal(one, accumulate(pipe, concepts, PROMPTS, range(3), batch_size=3, **kw))
    ref, _ = reference_counts(pipe, concepts, PROMPTS, seed=3)
    assert (ref != one).sum() <= 4  # the float64 reference, up to near-ties
    with pytest.raises(HRVInputError, match="hrv.batch_invariant must be true, false or strict, got 'yes'"):
        accumulate(
            pipe, concepts, PROMPTS, range(1), batch_invariant="yes", seed=0, progress=False, **SAMPLING
        )


def test_word_choices_are_a_function_of_their_arguments():
    n_words = np.array([10, 3, 1])
    a = word_choices(7, 12, 5, 4, n_words)
    assert a.shape == (5, 4, 3) and (a < n_words).all() and (a[..., 2] == 0).all()
    assert np.array_equal(a, word_choices(7, 12, 5, 4, n_words))
    draws = np.random.default_rng([7, 12]).integers(0, n_words, size=(20, 4, 3))  # C order
    assert np.array_equal(a, draws[:5])
    assert np.array_equal(word_choices(7, 12, 3, 4, n_words), a[:3])  # no dependence on T
    assert not np.array_equal(a, word_choices(7, 13, 5, 4, n_words))


def test_initial_latents_follow_the_readme_formula(tiny_pipe):
    """Prompt i starts from randn((1, C, h/f, w/f), generator=manual_seed(seed + i)), in any batch."""
    got = initial_latents(tiny_pipe, [3, 0, 7], 11, 64, 96)
    assert got.shape == (3, 4, 8, 12)
    for row, i in zip(got, (3, 0, 7), strict=True):
        assert torch.equal(row[None], readme_latent(tiny_pipe, 11 + i, 64, 96))
    assert torch.equal(
        initial_latents(tiny_pipe, range(5, 6), 6, 64, 96), readme_latent(tiny_pipe, 11, 64, 96)
    )


def test_batch_invariant_sampling_gives_bitwise_equal_latents(tiny_pipe):
    """With ``make_batch_invariant`` a prompt's final float latent is the same bit for bit alone as
    in a batch (checked on the latents themselves, which votes and 8-bit images would round away)."""
    pipe = tiny_pipe
    make_batch_invariant(pipe)
    kw = dict(num_inference_steps=2, guidance_scale=7.5, height=64, width=64, output_type="latent")
    latents = torch.cat([readme_latent(pipe, 5 + i, 64, 64) for i in range(3)])
    with torch.no_grad():
        together = pipe(PROMPTS, latents=latents, **kw).images
        for i, prompt in enumerate(PROMPTS):
            alone = pipe(prompt, latents=latents[i : i + 1], **kw).images
            assert torch.equal(together[i : i + 1], alone), i


def test_measuring_never_changes_generation(tiny_pipe, concepts):
    from hrv.accumulate import VoteMeasure

    make_batch_invariant(tiny_pipe)
    kw = dict(num_inference_steps=3, height=128, width=128, output_type="latent", guidance_scale=7.5)
    latents = initial_latents(tiny_pipe, [0, 1], 0, 128, 128)
    plain = tiny_pipe(PROMPTS[:2], latents=latents, **kw).images
    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    measure = VoteMeasure(registry, WordBank.build(tiny_pipe, concepts), 4, tiny_pipe.device)
    measure.set_batch(0, [0, 1])
    with installed(tiny_pipe.unet, Controller(registry, measure=measure)):
        measured = tiny_pipe(PROMPTS[:2], latents=latents, **kw).images
    assert torch.equal(plain, measured)
    measure.flush()
    assert int(measure.counts.sum()) == 2 * 4 * 128
    # processors are restored
    assert all(
        type(m.processor).__name__ != "CrossAttnProcessor"
        for m in tiny_pipe.unet.modules()
        if hasattr(m, "processor")
    )


def test_planted_heads_rank_first(tiny_pipe, concepts):
    """Heads whose query is a constant direction and whose keys score one concept's tokens
    high must get the top HRVs of that concept."""
    # a small concept set: fewer word tokens than text dimensions, so a key projection can
    # separate the target concept's tokens from all others exactly
    small = ConceptSet(concepts.names[:6], tuple(ws[:3] for ws in concepts.words[:6]))
    target = small.index("Vehicles")
    pipe = copy.deepcopy(tiny_pipe)
    registry = HeadRegistry.from_unet(pipe.unet)
    bank = WordBank.build(pipe, small)
    emb = bank.embeddings.double()
    y = -torch.ones(len(emb), dtype=torch.float64)
    rows = bank.word_tokens[target][bank.word_tokens[target] >= 0]
    y[torch.from_numpy(rows)] = 1.0
    g = torch.linalg.lstsq(emb, y[:, None]).solution[:, 0]  # emb @ g = +1 on target tokens, -1 elsewhere
    assert torch.allclose(emb @ g, y, atol=1e-4)
    planted = [(1, 2), (5, 5), (11, 0)]  # (CA-layer position, head)
    with torch.no_grad():
        for pos, h in planted:
            attn = pipe.unet.get_submodule(registry.layers[pos].module_name)
            d = attn.to_q.out_features // attn.heads
            q = torch.nn.Linear(attn.to_q.in_features, attn.to_q.out_features, bias=True)
            q.weight.copy_(attn.to_q.weight)
            q.bias.zero_()
            q.weight[h * d : (h + 1) * d] = 0
            q.bias[h * d] = 6.0 * math.sqrt(d)  # the query is the constant direction e0
            attn.to_q = q
            attn.to_k.weight[h * d : (h + 1) * d] = 0
            attn.to_k.weight[h * d] = g.float()  # key along e0 = +-1 by concept
    counts = accumulate(pipe, small, PROMPTS, range(3), seed=0, batch_size=3, progress=False, **SAMPLING)
    from hrv.hrvfile import normalize

    hrv, _ = normalize(counts.sum(0))
    planted_ids = [registry.layers[pos].offset + h for pos, h in planted]
    assert (counts.sum(0)[target, planted_ids] == 3 * 4).all()  # every vote of a planted head
    top = set(np.argsort(-hrv[target], kind="stable")[: len(planted)].tolist())
    assert top == set(planted_ids)


def test_large_logits_take_the_exact_softmax(tiny_pipe, concepts):
    """Heads whose queries are 60x larger (logits far beyond exp's float32 range without the
    softmax's max subtraction) still vote as the float64 reference does, whatever the batch."""
    pipe = copy.deepcopy(tiny_pipe)
    registry = HeadRegistry.from_unet(pipe.unet)
    with torch.no_grad():
        for pos in (0, 9):
            attn = pipe.unet.get_submodule(registry.layers[pos].module_name)
            d = attn.to_q.out_features // attn.heads
            attn.to_q.weight[: 4 * d] *= 60.0
    kw = dict(seed=2, progress=False, **SAMPLING)
    got = accumulate(pipe, concepts, PROMPTS, range(3), batch_size=2, **kw)
    want, margins = reference_counts(pipe, concepts, PROMPTS, seed=2)
    decisive = {(t, c, h) for t, c, h, m in margins if m > 1e-5}
    mismatched = [tuple(i) for i in np.argwhere(got != want)]
    assert not any(i in decisive for i in mismatched) and len(mismatched) <= 4
    assert np.array_equal(got, accumulate(pipe, concepts, PROMPTS, range(3), batch_size=1, **kw))


@pytest.mark.parametrize(
    ("packs", "strict", "overflow"),
    [(True, False, 0.01), (False, False, 0.01), (False, True, 0.01), (True, False, 0.9)],
)
def test_scores_are_bitwise_independent_of_batch(tiny_pipe, concepts, monkeypatch, packs, strict, overflow):
    """The float scores (not only their argmax) of a prompt are the same alone and in any batch, with
    the packed slots (the CPU's) and the full ones (a GPU's), so near-ties cannot make votes depend on
    batching. ``overflow`` 0.9 packs fewer slots (40 instead of 48), so that most but not all pairs
    of a batch are scored again in the full layout."""
    import hrv.accumulate as acc
    from hrv.accumulate import VoteMeasure, _Recorded

    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    bank = WordBank.build(tiny_pipe, concepts)
    gen = torch.Generator().manual_seed(0)
    pixels = [256, 256, 64, 64, 16, 16, 4, 16, 16, 16, 64, 64, 64, 256, 256, 256]  # tiny model, 128 px
    queries = []  # per layer (5, heads, HW, d)
    for layer, hw in zip(registry.layers, pixels, strict=True):
        attn = tiny_pipe.unet.get_submodule(layer.module_name)
        d = attn.to_q.out_features // attn.heads
        queries.append(torch.randn((5, attn.heads, hw, d), generator=gen))

    def scores(prompt_ids, rows):
        measure = VoteMeasure(registry, bank, 2, tiny_pipe.device, strict=strict)
        measure.set_batch(9, prompt_ids)
        out = {}
        members = [
            _Recorded(1, layer, tiny_pipe.unet.get_submodule(layer.module_name), q[rows])
            for layer, q in zip(registry.layers, queries, strict=True)
        ]
        for group_members in measure._same_shaped(members):
            s = measure._group_scores(group_members, measure._group(group_members))
            for g, member in enumerate(group_members):
                out[member.layer.position] = s[g]
        return out

    monkeypatch.setattr(acc, "packs_slots", lambda device: packs)
    monkeypatch.setattr(acc, "_OVERFLOW", overflow)
    whole = scores([10, 11, 12, 13, 14], slice(0, 5))
    measure = VoteMeasure(registry, bank, 2, tiny_pipe.device)
    measure.set_batch(9, [10, 11, 12, 13, 14])
    rescored = (measure._full_row.reshape(2, len(registry.layers), 5)[1] >= 0).mean()
    if not packs:  # as on a GPU: the full layout only, nothing to score again
        assert measure._packed_width == measure._full_width and rescored == 0
    else:
        assert (0.3 < rescored < 0.95) if overflow == 0.9 else rescored < 0.1
    alone = scores([12], slice(2, 3))
    pair = scores([13, 14], slice(3, 5))
    for pos, s in whole.items():
        assert torch.equal(s[2:3], alone[pos]), pos
        assert torch.equal(s[3:5], pair[pos]), pos


def test_an_unexpected_extra_unet_evaluation_is_a_clear_error(tiny_pipe, concepts):
    from hrv.accumulate import VoteMeasure

    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    measure = VoteMeasure(registry, WordBank.build(tiny_pipe, concepts), 4, tiny_pipe.device)
    measure.set_batch(0, [0])
    with pytest.raises(RuntimeError, match="UNet evaluation 4 is beyond the 4"):
        measure.end_evaluation(4)
    with pytest.raises(RuntimeError, match="did not vote"):
        measure.flush()
    # votes scored but not yet counted are never dropped by the next batch
    measure = VoteMeasure(registry, WordBank.build(tiny_pipe, concepts), 4, tiny_pipe.device)
    measure.set_batch(0, [0])
    for layer in registry.layers:
        attn = tiny_pipe.unet.get_submodule(layer.module_name)
        measure.record(attn, layer, torch.randn(1, attn.heads, 4, attn.to_q.out_features // attn.heads))
    measure.end_evaluation(0)
    with pytest.raises(RuntimeError, match="before the last one's votes were flushed"):
        measure.set_batch(0, [1])


def _toy_bank(token_counts: list[list[int]]) -> WordBank:
    """A bank whose concept c's word w has ``token_counts[c][w]`` tokens, on consecutive rows."""
    n, max_words, max_tokens = len(token_counts), max(map(len, token_counts)), max(map(max, token_counts))
    table = np.full((n, max_words, max_tokens), -1, dtype=np.int64)
    n_tok = np.ones((n, max_words), dtype=np.int64)
    row = 1
    for c, words in enumerate(token_counts):
        for w, k in enumerate(words):
            table[c, w, :k] = np.arange(row, row + k)
            n_tok[c, w] = k
            row += k
    return WordBank(torch.randn(row, 4), table, np.array([len(w) for w in token_counts]), n_tok)


def test_packed_width_is_the_narrowest_that_overflows_rarely_enough():
    import itertools

    from hrv.accumulate import packed_width

    counts = [[1, 2], [1, 1, 3], [2], [1, 4]]
    bank = _toy_bank(counts)
    draws = [1 + sum(c) for c in itertools.product(*counts)]  # every draw is equally likely
    full = 1 + sum(max(c) for c in counts)  # 12
    for overflow in (0.0, 0.05, 1 / 3, 0.5, 0.9, 1.0):
        want = next(
            (w for w in range(2, full, 2) if np.mean([u > w for u in draws]) <= overflow + 1e-12), full
        )
        assert packed_width(bank, overflow, multiple=2) == want, overflow
    assert packed_width(bank, 0.0, multiple=2) == full  # never narrower than every draw needs


@pytest.mark.parametrize("keep_sot", [True, False])
def test_packed_and_full_layouts_hold_each_chosen_word(tiny_pipe, monkeypatch, keep_sot):
    """Every (evaluation, layer, prompt) pair gets, for each concept, exactly its drawn word's bank
    rows, each weighted 1/tokens: in the packed tables where the words fit, else in the full ones."""
    import hrv.accumulate as acc

    counts = [[1, 2], [1, 1, 3], [2], [1, 4]]  # full layout: 1 + 2 + 3 + 2 + 4 = 12 slots
    bank = _toy_bank(counts)
    monkeypatch.setattr(acc, "_OVERFLOW", 0.9)
    registry = HeadRegistry.from_unet(tiny_pipe.unet)
    measure = acc.VoteMeasure(registry, bank, 3, "cpu", keep_sot=keep_sot)
    assert measure._packed_width == 8
    measure.set_batch(7, [0, 1, 2, 3])
    choices = np.stack(
        [word_choices(7, i, 3, len(registry.layers), bank.n_words) for i in range(4)], axis=2
    ).reshape(-1, len(counts))  # the tables' row order: (evaluation, layer, prompt)
    needed = 1 + np.array([sum(counts[c][w] for c, w in enumerate(choice)) for choice in choices])
    assert np.array_equal(measure._full_row >= 0, needed > 8)
    assert 0.1 < (needed > 8).mean() < 0.9
    for row, choice in enumerate(choices):
        full = measure._full_row[row]
        lay, at = (measure._packed, row) if full < 0 else (measure._full, full)
        for c, w in enumerate(choice):
            slots = [int(s) for s in lay.gather[at, :, c] if lay.weight[at, 0, s] > 0]
            assert [int(lay.idx[at, s]) for s in slots] == list(bank.word_tokens[c, w, : counts[c][w]])
            assert all(float(lay.weight[at, 0, s]) == np.float32(1 / counts[c][w]) for s in slots)
        used = lay.bias[at, 0] == 0  # the rest is padding, at -inf
        assert used.sum() == keep_sot + needed[row] - 1 and bool(used[0]) == keep_sot
        assert torch.isinf(lay.bias[at, 0][~used]).all()
