"""A whole decoding step through ``torch.compile``, for searches with one row per sentence.

A greedy step runs the decoder on one new token per sentence: a few dozen small products and,
around them, LayerNorms, residual adds, attention over the cache and the source, each a
separate eager call with its own Python and dispatch overhead. On two Zen 5 cores, the tiny
benchmark model in bf16 takes 1.1 ms a step for one sentence and 3.7 ms for 64, so
about a third of a 64-sentence step costs the same whatever the batch. Compiled, the step is
one graph: inductor fuses the element-wise work and the attention into a few C++ loops, and
the products stay oneDNN's prepacked calls (custom operators, :mod:`seqlab.decoding.packed`).
Dynamic shapes: one compilation serves every cache length and batch size (a batch reduced to
one sentence, which torch specializes, compiles once more).

Beam search keeps the eager step, with the compiled attention kernel of
:func:`seqlab.models.attention.decoding_kernel`: compiled whole, its steps of 5 rows per
sentence ran 15–20% slower on the same cores (inductor's own loops for those shapes lose to
the eager kernels), while greedy steps ran 19–34% faster (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import warnings

import torch


class CompiledStep:
    """``model.decode_step`` through ``torch.compile``, where it applies: every step but the first
    (which projects the source's keys and values once and fills the caches) of a search with one
    row per sentence. Calls return None elsewhere, and once compilation has failed here (no C++
    compiler, say: then a one-line warning, once), so the caller runs the eager step."""

    def __init__(self, model: torch.nn.Module):
        self.eager = model.decode_step
        self.compiled = None
        self.failed = False

    def __call__(self, new_tokens: torch.Tensor, enc, cache):
        if self.failed or cache is None or getattr(enc, "rows_per_source", 1) > 1:
            return None
        if self.compiled is None:
            self.compiled = torch.compile(self.eager, dynamic=True)
        try:
            return self.compiled(new_tokens, enc, cache)
        except Exception as error:  # compilation fails as a backend error of many kinds
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            warnings.warn(f"compiled decoding steps are off: torch.compile failed here ({reason})", RuntimeWarning,
                          stacklevel=2)
            self.failed = True
            return None
