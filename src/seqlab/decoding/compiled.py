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
makes it, instead of with eager calls and a host sync. Greedy decoding without and with
``--compile``, two Zen 5 cores, 64 sentences, the four alternated in one process (tok/s, fastest
of 5; benchmarks/RESULTS.md):

    tiny   bf16 16,861 → 22,903   int8 14,947 → 21,097
    small  bf16  4,462 →  5,632   int8  4,738 →  6,793

Beam search keeps the eager step, with the compiled attention kernel of
:func:`seqlab.models.attention.decoding_kernel`. Compiled whole with every size symbolic, its
steps ran 25–30% slower (loops dividing by a symbolic beam count at every element). Left to
dynamo's automatic dynamism, which keeps the beam size a constant, they ran 5–9% faster while
no sentence finished, but took a third longer once finished sentences left the batch and made
it symbolic too, and the recompilations of each shape change filled dynamo's cache (8 graphs)
once two precisions ran in one process.
"""

from __future__ import annotations

import warnings

import torch

from seqlab.decoding.search import log_prob_top_k
from seqlab.models.attention import compile_failure_reason, decoding_kernel_held_off


class CompiledStep:
    """``model.decode_step`` through ``torch.compile``, where it applies: the steps of a search with
    one row per sentence (greedy), from the third on. Greedy's first two steps run the eager step
    here without the compiled attention kernel, whose two graphs would be compiled for those two
    steps alone (tiny benchmark model, int8, an empty inductor cache, two Zen 4 cores: a first
    greedy run of 64 sentences 53 → 41 s). Calls return None elsewhere (beam steps), and once
    compilation has failed here (no C++ compiler, say: then a one-line warning, once), so the
    caller runs the eager step.

    Both searches, beams included, also choose each step's candidates through it
    (:meth:`log_prob_top_k`)."""

    def __init__(self, model: torch.nn.Module):
        self.eager = model.decode_step
        self.compiled = None
        self.compiled_top_k = None
        self.failed = False

    def __call__(self, new_tokens: torch.Tensor, enc, cache):
        if self.failed or getattr(enc, "rows_per_source", 1) != 1:  # beam steps stay eager
            return None
        if cache is None or cache.position < 2:
            # The first two steps run eagerly: they make the caches (the first with views of the
            # fused projections, whose strides would cost a compilation of their own).
            with decoding_kernel_held_off():  # nor are they worth the attention kernel's compilations
                return self.eager(new_tokens, enc, cache)
        try:
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
