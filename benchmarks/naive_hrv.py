"""A straightforward HRV accumulation, as the released code did it: batch 1, every attention
module (self attention too) replaced by an explicit-softmax forward, votes copied to the host in
every layer. Only the benchmark uses it, as the baseline to beat."""

from __future__ import annotations

import numpy as np
import torch

from hrv.accumulate import n_unet_evaluations, word_choices
from hrv.heads import HeadRegistry
from hrv.models import initial_latents


class NaiveProcessor:
    def __init__(self, state, layer=None):
        self.state, self.layer = state, layer

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        b = hidden_states.shape[0]
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = (
            attn.to_q(hidden_states)
            .view(b, -1, attn.heads, attn.to_q.out_features // attn.heads)
            .transpose(1, 2)
        )
        k = attn.to_k(ctx).view(b, -1, attn.heads, q.shape[-1]).transpose(1, 2)
        v = attn.to_v(ctx).view(b, -1, attn.heads, q.shape[-1]).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(b, -1, attn.heads * q.shape[-1])
        if self.layer is not None:
            self.state.vote(attn, self.layer, q[b // 2 :])
        return attn.to_out[1](attn.to_out[0](out))


class NaiveState:
    def __init__(self, pipe, concepts, seed):
        self.pipe, self.seed, self.step, self.prompt = pipe, seed, 0, 0
        self.n_words = np.array([len(ws) for ws in concepts.words])
        self.words = {}
        for c, ws in enumerate(concepts.words):
            for w, word in enumerate(ws):
                ids = pipe.tokenizer(
                    word, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
                )
                with torch.no_grad():
                    hidden = pipe.text_encoder(ids.input_ids.to(pipe.device))[0][0]
                n = len(pipe.tokenizer(word, add_special_tokens=False).input_ids)
                self.words[c, w] = hidden[1 : 1 + n]
                self.sot = hidden[:1]
        self.registry = HeadRegistry.from_unet(pipe.unet)
        self.counts = None

    def vote(self, attn, layer, q):
        choice = word_choices(self.seed, self.prompt, self.step + 1, len(self.registry.layers), self.n_words)
        choice = choice[self.step, layer.position]
        seq, owner = [self.sot], [-1]
        for c, w in enumerate(choice):
            seq.append(self.words[c, int(w)])
            owner += [c] * len(self.words[c, int(w)])
        k = attn.to_k(torch.cat(seq)).view(-1, attn.heads, q.shape[-1]).transpose(0, 1)
        probs = (
            torch.softmax(q[0] @ k.transpose(-1, -2) * attn.scale, dim=-1).mean(1).cpu().numpy()
        )  # host copy
        owner = np.array(owner)
        for h in range(attn.heads):
            scores = [probs[h, owner == c].mean() for c in range(len(self.n_words))]
            self.counts[self.step, int(np.argmax(scores)), layer.offset + h] += 1


def naive_accumulate(
    pipe, concepts, prompts, seed, steps, guidance_scale, height, width, state=None
) -> np.ndarray:
    state = state or NaiveState(pipe, concepts, seed)
    state.step, state.prompt = 0, 0
    registry = state.registry
    by_name = {layer.module_name: layer for layer in registry.layers}
    originals = dict(pipe.unet.attn_processors)
    pipe.unet.set_attn_processor(
        {name: NaiveProcessor(state, by_name.get(name.rsplit(".processor", 1)[0])) for name in originals}
    )
    T = n_unet_evaluations(pipe, steps)
    state.counts = np.zeros((T, len(concepts), registry.n_heads), dtype=np.int64)

    def count(*_):
        state.step += 1

    hook = pipe.unet.register_forward_hook(count)
    try:
        with torch.no_grad():
            for i, prompt in enumerate(prompts):
                state.prompt, state.step = i, 0
                pipe(
                    prompt,
                    latents=initial_latents(pipe, [i], seed, height, width),
                    num_inference_steps=steps,
                    guidance_scale=guidance_scale,
                    height=height,
                    width=width,
                    output_type="latent",
                )
    finally:
        hook.remove()
        pipe.unet.set_attn_processor(originals)
    return state.counts
