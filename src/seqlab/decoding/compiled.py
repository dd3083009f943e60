"""A whole decoding step through ``torch.compile``.

A decoding step runs the decoder on one new token per row (a sentence, or one of its beams): a
few dozen small products and, around them, LayerNorms, residual adds, attention over the cache
and the source, each a separate eager call with its own Python and dispatch overhead. On two
Zen 5 cores the tiny benchmark model in bf16 takes 1.1 ms a greedy step for one sentence and
3.7 ms for 64, so about a third of a 64-sentence step costs the same whatever the batch.
Compiled, the step is one graph: inductor fuses the element-wise work and the attention into a
few C++ loops, and the products stay oneDNN's prepacked calls (operators of seqlab's
own, :mod:`seqlab.decoding.packed`).

Dynamic shapes: one compilation serves every cache length and batch size (a batch reduced to
one sentence, which torch specializes, compiles once more). An int8 layer quantizes its input
inside the graph (:func:`seqlab.decoding.packed.quantized_in_graph`), fused with the loop that
makes it, instead of with eager calls and a host sync. A greedy search gives the cache room for
all its steps before the first compiled one (:meth:`~seqlab.models.interface.DecoderCache.reserve`),
so that each compiled step stores its keys and values in place, where eager bfloat16 steps
re-make the cache at its exact size at every step (int8, 64 sentences, the two alternated in one
process: 3% faster at best, 2–4% at the median, tiny and small). Greedy decoding without and with
``--compile``, two Zen 5 cores, 64 sentences, the four alternated in one process (tok/s, fastest
of 5; benchmarks/RESULTS.md):

    tiny   bf16 16,861 → 22,903   int8 14,947 → 21,097
    small  bf16  4,462 →  5,632   int8  4,738 →  6,793

Beam steps are compiled whole too, in a graph of their own. A beam step's N = n·K rows are the
K beams of each of n sentences, and the graph is told so: the rows come in as (n, K, …) views
with K a constant and n the only symbolic count, so every size made from the rows is K·n and the
loops index without dividing by a symbolic beam count. (With every size symbolic, beam steps
ran 25–30% slower than eager ones, the generated loops dividing by the beam count at every
element; with the number of sentences left static, each sentence that finished recompiled the
graph.) One graph serves every n from 2 up, finished sentences leaving the batch included; a
last sentence alone (n = 1, which torch would specialize) takes the eager step. The caches'
buffers are passed in as they are, so the step's new keys and values are stored into them in
place (passed as views made for the graph, they were copied back whole at every step), and the
step's survivors leave them there: each row reads its ancestors' keys and values where they lie,
through ``kv_rows`` (:meth:`seqlab.models.interface.DecoderCache.index_select` with
``kv_in_place``), in loops of the graph's own, where the reorder had copied the whole
self-attention cache after every step (19% of the profiled time of small int8 beam 5). Beam 5,
int8, 64 sentences, eager steps (with the compiled attention kernel) and compiled ones
alternated in one process (two Xeon cores without AMX, tok/s, fastest of 3-4;
benchmarks/RESULTS.md):

    tiny   3,778 → 4,783 (33 steps each)   2,713 → 3,536 (sources of 8-32 tokens, length caps)
    small    952 → 1,101                     825 →   978
"""

from __future__ import annotations

import warnings

import torch

from seqlab.decoding.search import log_prob_top_k
from seqlab.models.attention import compile_failure_reason, decoding_kernel_held_off, duck_sizing_off
from seqlab.models.interface import DecoderCache, EncoderOutput


class CompiledStep:
    """``model.decode_step`` through ``torch.compile``, where it applies: every step of a search from
    the third on, greedy steps (one row per sentence) in one graph, beam steps (K rows per
    sentence) in another. The first two steps run the eager step here without the compiled
    attention kernel, whose graphs would be compiled for those two steps alone (tiny benchmark
    model, int8, an empty inductor cache, two Zen 4 cores: a first greedy run of 64 sentences
    53 → 41 s); so does a beam search's last sentence alone. Calls return None once compilation
    has failed here (no C++ compiler, say: then a one-line warning, once), so the caller runs the
    eager step.

    Both searches also choose each step's candidates through it (:meth:`log_prob_top_k`)."""

    def __init__(self, model: torch.nn.Module):
        self.eager = model.decode_step
        self.compiled = None  # greedy steps
        self.compiled_beams = None  # beam steps
        self.compiled_top_k = None
        self.failed = False

    def __call__(self, new_tokens: torch.Tensor, enc, cache):
        if self.failed:
            return None
        beams = getattr(enc, "rows_per_source", 1)
        if cache is None or cache.position < 2 or (beams > 1 and new_tokens.size(0) == beams):
            # The first two steps run eagerly: they make the caches (the first with views of the
            # fused projections, whose strides would cost a compilation of their own). So does a
            # beam search's last sentence, whose n = 1 torch would specialize in another graph.
            with decoding_kernel_held_off():  # nor are they worth the attention kernel's compilations
                return self.eager(new_tokens, enc, cache)
        try:
            if beams > 1:
                return self._beam_step(new_tokens, enc, cache)
            if self.compiled is None:
                self.compiled = torch.compile(self.eager, dynamic=True)
                # The first call compiles. With dynamic shapes dynamo would take the modules' float
                # attributes (LayerNorm's eps, nn.Embedding's norm_type) for symbolic inputs, find
                # that inductor cannot keep them so, and trace the whole step a second time (3-8 s).
                with torch._dynamo.config.patch(specialize_float=True):
                    return self.compiled(new_tokens, enc, cache)
            return self.compiled(new_tokens, enc, cache)
        except Exception as error:  # compilation fails as a backend error of many kinds
            return self._fail(error)

    def _beam_step(self, new_tokens: torch.Tensor, enc: EncoderOutput, cache: DecoderCache):
        """A beam step through the beams' graph, its rows (n·K, …) passed as (n, K, …)."""
        K = enc.rows_per_source
        n = new_tokens.size(0) // K
        by_source = lambda t: t.view(n, K, *t.shape[1:])  # noqa: E731
        tokens, src_mask = by_source(new_tokens), by_source(enc.src_mask)
        kv_rows = None if cache.kv_rows is None else by_source(cache.kv_rows)
        for t in (tokens, src_mask, kv_rows):
            if t is not None:
                torch._dynamo.mark_static(t, 1)  # K a constant, n symbolic (at every call: a recompilation keeps it so)
        if self.compiled_beams is None:
            self.compiled_beams = torch.compile(_beam_step_by_source, dynamic=True)
        # specialize_float as for greedy steps; no duck sizing, which gives sizes of equal value one
        # symbol (64 sentences and 64-wide heads, say) and, once one of them is specialized, all.
        with torch._dynamo.config.patch(specialize_float=True), duck_sizing_off():
            logits, new_cache = self.compiled_beams(self.eager, tokens, src_mask, cache.self_kv,
                                                    cache.cross_kv, cache.position, kv_rows)
        new_cache.spare_kv = cache.spare_kv
        return logits, new_cache

    def log_prob_top_k(self, logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:func:`seqlab.decoding.search.log_prob_top_k` through ``torch.compile`` (the log-probabilities
        of the k best next tokens and their ids), or None once compilation has failed here."""
        if self.failed:
            return None
        try:
            if self.compiled_top_k is None:
                self.compiled_top_k = torch.compile(log_prob_top_k, dynamic=True)
            return self.compiled_top_k(logits, k)
        except Exception as error:
            return self._fail(error)

    def _fail(self, error: Exception) -> None:
        """A one-line warning, once; every later call returns None (the caller's eager path)."""
        warnings.warn(f"compiled decoding steps are off: torch.compile failed here "
                      f"({compile_failure_reason(error)})", RuntimeWarning, stacklevel=3)
        self.failed = True
        return None


def _beam_step_by_source(decode_step, tokens: torch.Tensor, src_mask: torch.Tensor,
                         self_kv: list[tuple[torch.Tensor, torch.Tensor]],
                         cross_kv: list[tuple[torch.Tensor, torch.Tensor]], position: int,
                         kv_rows: torch.Tensor | None = None):
    """``decode_step`` of beams given by sentence: tokens (n, K, 1), src_mask (n, K, S), the
    self-attention cache (n·K rows, or R ≥ n·K read through kv_rows (n, K, position); H,
    ≥ position + 1, d_k) and the encoder's K, V (n, H, S, d_k). The checks tell torch.compile
    how the row counts relate, so that it keeps one symbol, n (and R)."""
    n, K = tokens.shape[:2]
    for t in (src_mask, *(t for kv in cross_kv for t in kv)):
        torch._check(t.size(0) == n)
    for t in (t for kv in self_kv for t in kv):
        torch._check(t.size(0) == n * K if kv_rows is None else t.size(0) >= n * K)
    if kv_rows is not None:
        torch._check(kv_rows.size(2) == position)
        kv_rows = kv_rows.reshape(n * K, position)
    enc = EncoderOutput(None, src_mask.reshape(n * K, -1), rows_per_source=K)  # no memory: the cache has its K, V
    return decode_step(tokens.reshape(n * K, 1), enc, DecoderCache(position, list(self_kv), cross_kv, kv_rows=kv_rows))
