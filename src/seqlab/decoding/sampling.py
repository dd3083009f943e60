"""Generating text from a prompt: the language model as a "next token predictor" run on its own output.

At each step the model gives p(y_t | y_<t); the next token is

* the most likely one (``temperature = 0``: greedy), or
* drawn from p^(1/T), renormalised (temperature T), restricted to the k most likely tokens
  (top-k; Fan et al. 2018) and/or to the smallest set whose probability reaches p (top-p,
  nucleus sampling; Holtzman et al. 2020).

Sampling is seeded with its own ``torch.Generator``, so the same seed gives the same text.
Works for any model with the decode contract (``decode(tokens, enc)``); language models pass
``enc=None``.
"""

from __future__ import annotations

import torch

from seqlab.data.tokenizer import BOS, EOS


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to −∞ every logit outside the top-k and outside the top-p nucleus. logits: (N, V)."""
    if top_k is not None and top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first always stays).
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(model, prompt: list[int], max_new_tokens: int = 100, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, seed: int = 0, enc=None,
             num_samples: int = 1, use_cache: bool = True) -> list[list[int]]:
    """Continue ``prompt`` (token ids, without <bos>) ``num_samples`` times; returns the new ids of each.

    Generation stops at <eos>, after ``max_new_tokens``, or at the model's ``max_positions``.
    ``use_cache=False`` decodes the whole prefix again at every step (what the cache must equal).
    """
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.tensor([[BOS] + prompt] * num_samples, device=device)  # (N, 1 + P)
    finished = torch.zeros(num_samples, dtype=torch.bool, device=device)
    steps = min(max_new_tokens, model.max_positions - tokens.size(1))
    cache, fresh = None, tokens  # the first step reads the whole prompt, later ones only the newest token
    for _ in range(max(steps, 0)):
        if use_cache and hasattr(model, "decode_step"):
            logits, cache = model.decode_step(fresh, enc, cache)
        else:
            logits = model.decode(tokens, enc)[:, -1]
        logits = logits.float()  # (N, V)
        if temperature == 0:
            next_token = logits.argmax(dim=-1)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N,)
        next_token = next_token.masked_fill(finished, EOS)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        fresh = next_token[:, None]
        finished |= next_token == EOS
        if finished.all():
            break
    new = tokens[:, 1 + len(prompt):].tolist()
    return [row[: row.index(EOS)] if EOS in row else row for row in new]
