"""Autoregressive search: at test time the decoder reads its own previous outputs.

In training the decoder sees the true previous word (teacher forcing); at test time it only has
its own guesses, so the translation is built one token at a time. Both searches here work on
whole batches and on any encoder-decoder model with the ``encode``/``decode`` contract of
:mod:`seqlab.models.interface` (Transformer, RNN seq2seq, vector_to_seq); sampling from language
models is in :mod:`seqlab.decoding.sampling`.

* greedy: take the most likely next token, y_t = argmax_y p(y | y_<t, x);
* beam search: keep the K best prefixes by log-probability; a finished hypothesis is scored
  with the length penalty of Wu et al. (2016), s(Y) = log P(Y | X) / lp(Y),
  lp(Y) = ((5 + |Y|) / 6)^α, so that longer outputs are not unfairly punished.

The output length is capped per sentence at ⌊max_len_ratio · |source|⌋ + max_len_extra tokens
(including <eos>), where <eos> is forced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from seqlab.data.tokenizer import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]  # generated ids, without <bos> and <eos>
    score: float  # log-probability (greedy) or length-normalised log-probability (beam)


def max_output_lengths(enc, ratio: float, extra: int, limit: int) -> torch.Tensor:
    """(B,) longest output allowed per sentence: ⌊ratio · |x|⌋ + extra, at most ``limit``.

    |x| counts the real source positions the encoder saw (1 for a one-vector source).
    """
    src_len = enc.src_mask.sum(dim=1)
    return (src_len.float() * ratio).floor().long().add(extra).clamp(1, limit)  # (B,)


def length_penalty(length: int | torch.Tensor, alpha: float):
    """lp(Y) = ((5 + |Y|) / 6)^α (Wu et al. 2016, eq. 14)."""
    return ((5.0 + length) / 6.0) ** alpha


def next_logits(model, tokens: torch.Tensor, enc, cache, use_cache: bool = True):
    """Next-token logits z for the newest position (N, V), and the updated cache.

    With the cache (``model.decode_step``) only the newest token is computed; without it the whole
    prefix is decoded again each step (the reference the cached path is tested against). A model
    set up with ``for_inference(..., compile=True)`` takes its compiled step where that applies
    (:mod:`seqlab.decoding.compiled`).
    """
    if use_cache and hasattr(model, "decode_step"):
        compiled = getattr(model, "compiled_step", None)
        if compiled is not None and (out := compiled(tokens[:, -1:], enc, cache)) is not None:
            return out
        return model.decode_step(tokens[:, -1:], enc, cache)  # (N, V)
    return model.decode(tokens, enc)[:, -1], cache  # (N, V): only the newest position matters


def top_continuations(logits: torch.Tensor, must_end: torch.Tensor | None, k: int, compiled=None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely next tokens of each row and their log-probabilities (float32), (N, k) each.

    Rows where ``must_end`` (the length cap is reached) may only produce <eos>, log-probability 0;
    the searches pass None while no sentence is at its cap yet, which they know without asking
    the device (the shortest cap), so a step costs no host-device sync for it. ``compiled``: the
    model's :class:`seqlab.decoding.compiled.CompiledStep`, whose compiled :func:`log_prob_top_k`
    is taken where it has one.
    """
    found = compiled.log_prob_top_k(logits, k) if compiled is not None else None
    if found is None:
        # Normalised in the logits' own dtype: a bf16 model's logits already carry bf16 rounding, and
        # a bf16 log_softmax is ~1.5× faster than cast + float32 (log_softmax(dtype=float32) is ~3× slower).
        top, ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)  # (N, k) each
        found = top.float(), ids
    top, ids = found
    if must_end is not None:  # only <eos>, log p = 0: the first candidate, and the others out of reach
        first = torch.arange(k, device=top.device) == 0  # (k,)
        top = torch.where(must_end[:, None], torch.where(first, 0.0, float("-inf")), top)
        ids = torch.where(must_end[:, None] & first, EOS, ids)
    return top, ids


TOP_K_BLOCK = 64  # log_prob_top_k looks for the k best among the k blocks of this many with the highest maxima


def log_prob_top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(y) = z_y − log Σ_v exp(z_v) of the k largest logits z of each row (float32) and their
    ids, (N, k) each: :func:`top_continuations` written for ``torch.compile``.

    Without a log-softmax of the whole vocabulary: the k best tokens are those of the largest
    logits, and log Σ exp is a reduction (in float32), which inductor fuses with the cast into one
    kernel (a pass for the maximum, a pass for the sum, over each row). PyTorch's CPU top-k sorts out each row's k best of all V; here it looks
    only among the k blocks of 64 with the highest maxima (a block holding one of the k best has
    a maximum at least as high as it, so fewer than k blocks can beat it), where the maxima are
    another fused reduction. With ``--compile``, 64 sentences, both choices alternated in one
    process on two AMX Xeon cores (fastest of 5 runs; benchmarks/RESULTS.md): greedy 2–11% and
    beam 5 4–21% faster than the eager log-softmax and top-k, for the tiny and small benchmark
    models in bf16 and int8. Run eagerly these lines were no faster for bf16 logits (the casts
    and reductions each make a vocabulary-wide tensor), so eager searches keep the log-softmax.
    """
    N, V = logits.shape
    blocks = V // TOP_K_BLOCK
    if blocks <= k:
        top, ids = logits.topk(k, dim=-1)
    else:
        head = logits[:, : blocks * TOP_K_BLOCK].view(N, blocks, TOP_K_BLOCK)  # (N, V / 64, 64)
        best_blocks = head.amax(dim=-1).topk(k, dim=-1).indices  # (N, k)
        candidates = head.gather(1, best_blocks[:, :, None].expand(N, k, TOP_K_BLOCK)).view(N, k * TOP_K_BLOCK)
        candidate_ids = (best_blocks[:, :, None] * TOP_K_BLOCK
                         + torch.arange(TOP_K_BLOCK, device=logits.device)).view(N, k * TOP_K_BLOCK)
        if blocks * TOP_K_BLOCK < V:  # the last, shorter block always stays in
            candidates = torch.cat([candidates, logits[:, blocks * TOP_K_BLOCK:]], dim=1)
            tail_ids = torch.arange(blocks * TOP_K_BLOCK, V, device=logits.device)
            candidate_ids = torch.cat([candidate_ids, tail_ids.expand(N, -1)], dim=1)
        top, at = candidates.topk(k, dim=-1)  # (N, k) each
        ids = candidate_ids.gather(1, at)
    z = logits.float()  # (N, V)
    z_max = z.amax(dim=-1, keepdim=True)
    log_sum_exp = (z - z_max).exp().sum(dim=-1, keepdim=True).log() + z_max  # (N, 1)
    return top.float() - log_sum_exp, ids


def candidates_per_beam(beam_size: int, vocab_size: int) -> int:
    """A sentence's best 2K candidates are among its K beams' own 2K best continuations each."""
    return min(2 * beam_size, vocab_size)


@torch.inference_mode()
def greedy_search(model, src: torch.Tensor, max_len_ratio: float = 1.5, max_len_extra: int = 10,
                  use_cache: bool = True) -> list[list[Hypothesis]]:
    """y_t = argmax p(y | y_<t, x) for a batch of sources (B, S); one hypothesis per sentence.

    Sentences that have produced <eos> leave the batch once they are a quarter of it (at least
    one), so the remaining steps are not spent on them. Not at every single one: each drop
    copies the whole cache (greedy never reorders it otherwise), and dropping at every finish
    was 3–11% slower (small benchmark model, 64 sources of 8–32 tokens, bf16 and fp32)."""
    B, compiled = src.size(0), getattr(model, "compiled_step", None)
    enc = model.encode(src)
    max_len = max_output_lengths(enc, max_len_ratio, max_len_extra, model.max_positions - 1)
    L, shortest = int(max_len.max()), int(max_len.min())
    active = torch.arange(B, device=src.device)  # the sentences still decoded (indices into src)
    out_tokens = torch.full((B, L), PAD, dtype=torch.long, device=src.device)  # of those that left
    out_scores = torch.zeros(B, device=src.device)
    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=src.device)  # (n, 1)
    scores = torch.zeros(B, device=src.device)
    finished = torch.zeros(B, dtype=torch.bool, device=src.device)
    cache = None
    for t in range(L):
        if t == 2 and compiled is not None and not compiled.failed and cache is not None:
            # before the first compiled step: room for every step (and one more: a buffer never read whole)
            cache = cache.reserve(L + 1)
        logits, cache = next_logits(model, tokens, enc, cache, use_cache)  # (n, V)
        must_end = t + 1 >= max_len if t + 1 >= shortest else None  # (n,) once some sentence is at its cap
        best_logp, best = (x.squeeze(1) for x in top_continuations(logits, must_end, 1, compiled))  # (n,), (n,)
        best = best.masked_fill(finished, PAD)
        scores += best_logp.masked_fill(finished, 0.0)
        tokens = torch.cat([tokens, best[:, None]], dim=1)  # (n, t + 2)
        finished |= best == EOS
        n, n_done = finished.numel(), int(finished.sum())  # the step's one host-device sync
        if n_done == n:
            break
        if n_done >= max(1, n // 4):
            gone, keep = finished.nonzero().squeeze(1), (~finished).nonzero().squeeze(1)
            out_tokens[active[gone], : t + 1], out_scores[active[gone]] = tokens[gone, 1:], scores[gone]
            active, tokens, scores, finished, max_len = (x[keep] for x in (active, tokens, scores, finished, max_len))
            enc, shortest = enc.keep_sources(keep), int(max_len.min())
            if cache is not None:
                cache = cache.index_select(keep)
                cache.spare_kv = None  # greedy never reorders again: let the old buffers go
    out_tokens[active, : tokens.size(1) - 1], out_scores[active] = tokens[:, 1:], scores
    return [[Hypothesis(_strip(row), score)] for row, score in zip(out_tokens.tolist(), out_scores.tolist())]


@torch.inference_mode()
def beam_search(
    model,
    src: torch.Tensor,
    beam_size: int = 5,
    length_penalty_alpha: float = 1.0,
    max_len_ratio: float = 1.5,
    max_len_extra: int = 10,
    nbest: int = 1,
    use_cache: bool = True,
) -> list[list[Hypothesis]]:
    """Batched beam search over all sentences and beams at once; ``nbest`` best per sentence.

    Per step, each of the K live beams of a sentence proposes its 2K best continuations (no
    other of its V could make the sentence's top 2K); of the K·2K candidates the top 2K are
    kept. Those among the top K that end in <eos> join the sentence's finished list (scored with
    the length penalty); the best K that do not end in <eos> become the new live beams. A
    sentence is done once it has K finished hypotheses (as in fairseq), so beam size 1 is exactly
    greedy search; a done sentence leaves the batch at once (its rows are dropped in the reorder
    every step makes anyway), so later steps compute only the sentences still searched. (With a
    compiled step the reorder leaves the self-attention keys and values where they are and
    records where each beam's lie: :meth:`DecoderCache.index_select`.) The first
    step, where a sentence's K beams would all be the same <bos>, runs one row per sentence (as
    CTranslate2's does) and its best K continuations become the K beams.
    """
    B, K, device = src.size(0), beam_size, src.device
    nbest, compiled = min(nbest, K), getattr(model, "compiled_step", None)
    first_enc = model.encode(src)  # the first step's: one row per sentence
    max_len = max_output_lengths(first_enc, max_len_ratio, max_len_extra, model.max_positions - 1)  # (B,)
    L, shortest = int(max_len.max()), int(max_len.min())
    enc = first_enc.repeat_for_beams(K)  # B·K rows, the K beams of sentence b in rows b·K … b·K + K − 1

    # The sentences still searched (indices into src); a finished one leaves the batch, its
    # results kept in out_scores and out_tokens. Below, n counts the sentences still searched.
    active = torch.arange(B, device=device)
    out_scores = torch.full((B, K), float("-inf"), device=device)
    out_tokens = torch.full((B, K, L), PAD, dtype=torch.long, device=device)

    tokens = torch.full((B, 1), BOS, dtype=torch.long, device=device)  # (n·K, t + 1) live prefixes; (B, 1) at first
    beam_scores = torch.zeros(B, 1, device=device)  # (n, K); one beam per sentence at first
    fin_scores = torch.full((B, K), float("-inf"), device=device)  # length-normalised
    fin_tokens = torch.full((B, K, L), PAD, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    rank = torch.arange(2 * K, device=device)
    cache = None

    for t in range(L):
        n, beams = active.numel(), beam_scores.size(1)  # beams: 1 at the first step, K after it
        must_end = (t + 1 >= max_len).repeat_interleave(beams) if t + 1 >= shortest else None  # (n·K,)
        logits, cache = next_logits(model, tokens, enc if t else first_enc, cache, use_cache)  # (n·K, V)
        k = candidates_per_beam(K, logits.size(-1))
        logp, ids = top_continuations(logits, must_end, k, compiled)  # (n·K, k) each
        candidates = (beam_scores.view(n * beams, 1) + logp).view(n, beams * k)  # (n, K·k)
        top_scores, top_ids = candidates.topk(min(2 * K, beams * k), dim=1)  # (n, 2K)
        if top_scores.size(1) < K:  # a first step with fewer tokens than beams: the other beams start dead
            missing = (n, K - top_scores.size(1))
            top_scores = torch.cat([top_scores, top_scores.new_full(missing, float("-inf"))], dim=1)
            top_ids = torch.cat([top_ids, top_ids.new_zeros(missing)], dim=1)
        beam_of, token = top_ids // k, ids.view(n, beams * k).gather(1, top_ids)  # (n, 2K) each
        prefix_rows = (torch.arange(n, device=device)[:, None] * beams + beam_of)  # (n, 2K) rows of `tokens`
        is_eos = token == EOS

        # Candidates ending in <eos> among the top K finish; merge them into the finished lists.
        finishing = is_eos & (rank[: top_ids.size(1)] < K) & ~done[:, None] & torch.isfinite(top_scores)
        new_fin_scores = torch.where(finishing, top_scores / length_penalty(t + 1, length_penalty_alpha), float("-inf"))
        new_fin_tokens = torch.full((n, top_ids.size(1), L), PAD, dtype=torch.long, device=device)
        new_fin_tokens[:, :, :t] = tokens[prefix_rows.view(-1), 1:].view(n, top_ids.size(1), t)
        new_fin_tokens[:, :, t] = EOS
        all_scores = torch.cat([fin_scores, new_fin_scores], dim=1)  # (n, 3K)
        fin_scores, keep = all_scores.topk(K, dim=1)
        fin_tokens = torch.cat([fin_tokens, new_fin_tokens], dim=1).gather(1, keep[:, :, None].expand(-1, -1, L))

        # The best K candidates that do not end in <eos> stay alive.
        alive_scores = top_scores.masked_fill(is_eos, float("-inf"))
        beam_scores, pick = alive_scores.topk(K, dim=1)  # (n, K)
        rows, new_tokens = prefix_rows.gather(1, pick), token.gather(1, pick)  # (n, K) each

        done |= torch.isfinite(fin_scores).all(dim=1) | (t + 1 >= max_len)
        n_done = int(done.sum())  # the step's one host-device sync
        if n_done == n:
            break
        sources = None
        if n_done:  # done sentences leave the batch: no more steps spent on them
            gone, sources = done.nonzero().squeeze(1), (~done).nonzero().squeeze(1)
            out_scores[active[gone]], out_tokens[active[gone]] = fin_scores[gone], fin_tokens[gone]
            active, done, max_len = active[sources], done[sources], max_len[sources]
            beam_scores, fin_scores, fin_tokens = beam_scores[sources], fin_scores[sources], fin_tokens[sources]
            rows, new_tokens = rows[sources], new_tokens[sources]
            enc, shortest = enc.keep_sources(sources), int(max_len.min())
        rows = rows.view(-1)  # (n·K,) the parent row of each surviving beam
        tokens = torch.cat([tokens[rows], new_tokens.view(-1, 1)], dim=1)  # (n·K, t + 2)
        if cache is not None:  # each survivor keeps its own keys, values or state
            in_place = compiled is not None and not compiled.failed  # read where they lie by compiled steps
            cache = cache.index_select(rows, same_sources=True, sources=sources, kv_in_place=in_place)

    out_scores[active], out_tokens[active] = fin_scores, fin_tokens
    results = []
    for scores, seqs in zip(out_scores[:, :nbest].tolist(), out_tokens[:, :nbest].tolist()):
        results.append([Hypothesis(_strip(s), sc) for s, sc in zip(seqs, scores) if math.isfinite(sc)])
    return results


def search(model, src: torch.Tensor, beam_size: int = 1, length_penalty_alpha: float = 1.0,
           max_len_ratio: float = 1.5, max_len_extra: int = 10, nbest: int = 1,
           use_cache: bool = True) -> list[list[Hypothesis]]:
    """Greedy search for ``beam_size == 1`` and ``nbest == 1``, beam search otherwise."""
    if beam_size < 1:
        raise ValueError(f"beam size must be at least 1 (got {beam_size})")
    if beam_size == 1 and nbest == 1:
        return greedy_search(model, src, max_len_ratio, max_len_extra, use_cache)
    return beam_search(model, src, beam_size, length_penalty_alpha, max_len_ratio, max_len_extra, nbest, use_cache)


def _strip(ids: list[int]) -> list[int]:
    """Generated ids up to (not including) the first <eos>, without <pad>."""
    if EOS in ids:
        ids = ids[: ids.index(EOS)]
    return [i for i in ids if i != PAD]
