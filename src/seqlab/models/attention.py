"""Attention: the weighted sum that lets one position look at any other.

The lecture builds it up in three steps:

* RNN + attention: the context vector c_t = Σ_i softmax_i(<s_t, h_i>) h_i lets the decoder
  state s_t pick the encoder states h_i it needs.
* Self-attention: the same weighted sum inside one sequence, h_2 = Σ_i softmax_i(<h_2, h_i>) h_i,
  which cuts the recurrent chain; masked in the decoder so that s_4 never sees s_5.
* Multi-head scaled dot-product attention (Vaswani et al. 2017, §3.2): learned projections
  turn each vector into a query ("the question"), a key ("the answer") and a value ("the
  meaning"); h heads attend in parallel and a final linear layer mixes their opinions.

Masks are boolean and broadcast to (B, H, T_q, T_k): True marks a key the query may attend to.

The first step, the attention of RNN seq2seq models, lives in :class:`RecurrentAttention` with
its three score functions side by side; multi-head attention follows.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import torch
import torch.fx.experimental._config as fx_config
import torch.nn.functional as F
from torch import nn

from seqlab.hardware import has_amx
from seqlab.models.linear import Linear, linear


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V, written out.

    Args:
        q: (B, H, T_q, d_k) queries; k: (B, H, T_k, d_k) keys; v: (B, H, T_k, d_k) values.
        mask: boolean, broadcastable to (B, H, T_q, T_k); False entries get no weight.
    Returns:
        the attended values (B, H, T_q, d_k) and the attention weights (B, H, T_q, T_k).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # each row sums to 1 over the keys it may see
    if dropout > 0.0:
        weights = F.dropout(weights, p=dropout)
    return weights @ v, weights  # (B, H, T_q, d_k), (B, H, T_q, T_k)


class RecurrentAttention(nn.Module):
    """c_t = Σ_i softmax_i(score(s_t, h_i)) h_i: the decoder state s_t reads the encoder states h_i.

    score(s, h) is one of
      * ``dot``      ⟨s, h⟩, the lecture's inner product (Luong et al. 2015, eq. 8, "dot");
      * ``general``  s W hᵀ, a learned bilinear form (Luong et al. 2015, "general");
      * ``additive`` vᵀ tanh(W s + U h) (Bahdanau et al. 2015, eq. 6; Luong's "concat").
    ``dot`` needs s and h of the same size; the others map between sizes.
    """

    def __init__(self, score: str, query_size: int, key_size: int, attention_size: int | None = None):
        super().__init__()
        if score == "dot" and query_size != key_size:
            raise ValueError(f"dot attention needs equal sizes (decoder {query_size}, encoder {key_size})")
        self.score_kind = score
        if score == "general":
            self.W = nn.Linear(key_size, query_size, bias=False)
        elif score == "additive":
            attention_size = attention_size or query_size
            self.W_s = nn.Linear(query_size, attention_size, bias=False)
            self.U_h = nn.Linear(key_size, attention_size)
            self.v = nn.Linear(attention_size, 1, bias=False)

    def scores(self, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """s: (B, T, Q) decoder states, h: (B, S, K) encoder states → scores (B, T, S)."""
        if self.score_kind == "dot":
            return s @ h.transpose(1, 2)  # ⟨s_t, h_i⟩
        if self.score_kind == "general":
            return s @ self.W(h).transpose(1, 2)  # s_t W h_iᵀ
        # vᵀ tanh(W s_t + U h_i) for every (t, i) pair: (B, T, 1, A) + (B, 1, S, A)
        return self.v(torch.tanh(self.W_s(s)[:, :, None] + self.U_h(h)[:, None])).squeeze(-1)

    def forward(self, s: torch.Tensor, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context vectors (B, T, K) and attention weights (B, T, S); ``mask`` (B, S) hides source <pad>."""
        scores = self.scores(s, h).masked_fill(~mask[:, None, :], float("-inf"))  # (B, T, S)
        weights = scores.softmax(dim=-1)  # each decoder step distributes 1 over the source words
        return weights @ h, weights  # c_t = Σ_i α_ti h_i: (B, T, K)


def written_out_is_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether :func:`scaled_dot_product_attention` beats PyTorch's fused kernel for these shapes.

    On CPU the fused (flash) kernel runs bfloat16 several times slower than the written-out
    products do on AMX units when sequences are short: measured on two Xeon cores, forward +
    backward, 8 heads of 64 (benchmarks/RESULTS.md), written out is 4.6× faster at 32 keys, 1.7×
    at 128 and 0.45× at 256, where the fused kernel's savings in memory traffic take over. In
    float32 written out leads only below about 48 keys (1.3× at 32) and made no measurable
    difference to a whole training step, so float32 training and GPUs take the fused kernel.
    A float32 decoding step is different: a few queries (one per beam) against the cache, where
    the fused kernel's set-up dominates (two Zen 5 cores, 64 sentences × 5 beams against 8 keys:
    864 µs fused, 240 µs written out; one query each: about even), while whole teacher-forced
    sequences run twice as fast fused (32 × 32, forward only: 4.4 vs 9.3 ms).
    """
    if q.device.type != "cpu" or k.size(-2) > 128:
        return False
    return q.dtype == torch.bfloat16 or (q.size(-2) <= 8 and not torch.is_grad_enabled())


def attention_as_sums(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V again, as sums: score_ij = Σ_d q_id k_jd / √d_k, out_i = Σ_j α_ij v_j.

    The same shapes and mask as :func:`scaled_dot_product_attention`, accumulated in float32,
    the weights not returned. Written as elementwise products and reductions for
    ``torch.compile``, which turns it into one loop over the keys and values with nothing of size
    T_q × T_k × d_k ever stored (run eagerly it would store exactly that): the decoding kernel of
    :meth:`MultiHeadAttention.attend` when compiled decoding is on (:func:`decoding_kernel`).
    """
    scores = (q.float()[:, :, :, None, :] * k.float()[:, :, None]).sum(-1) / math.sqrt(q.size(-1))  # (B, H, T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)  # (B, H, T_q, T_k)
    return (weights[..., None] * v.float()[:, :, None]).sum(-2).to(q.dtype)  # (B, H, T_q, d_k)


DECODING_KERNEL_MAX_QUERIES = 8  # a decoding step's queries per row of keys: 1, or the beams of a sentence
_compiled_attention = None  # torch.compile(attention_as_sums), made at first use; False once it has failed
_kernel_held_off = False  # set by decoding_kernel_held_off()


def decoding_kernel_max_queries() -> int:
    """The most queries per row of keys the compiled kernel takes on this CPU.

    A sentence's beams against its one set of encoder keys are several queries per row. On AMX
    CPUs oneDNN's tile kernels multiply those twice as fast as the compiled loop (two Xeon
    cores, 64 sentences × 8 heads, 5 queries against 32 keys: 366 vs 717 µs), while a single
    query against the cache still gains (320 × 8 against 8–33 keys: 656–1,146 → 378–894 µs);
    without AMX (Zen 5) the compiled loop is the faster for both."""
    return 1 if has_amx() else DECODING_KERNEL_MAX_QUERIES


@contextmanager
def decoding_kernel_held_off():
    """Attention without the compiled kernel inside this block: for a search's few eager steps
    before a compiled whole step takes over (:mod:`seqlab.decoding.compiled`), where compiling the
    kernel's two graphs (with a source mask, and without) would cost more than it saves."""
    global _kernel_held_off
    held, _kernel_held_off = _kernel_held_off, True
    try:
        yield
    finally:
        _kernel_held_off = held


def decoding_kernel_applies(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether the compiled :func:`attention_as_sums` should replace batched matrix products here:
    a decoding step (a few queries, no gradients, more than one key: a first step's single key
    would cost a compilation of its own) on CPU in bfloat16, where oneDNN's batched
    products of one query against a few dozen keys spend most of their time setting up each small
    matrix. Two Zen 5 cores, 320 beams × 8 heads of 64: 2.4–2.8× faster than the two products and
    the softmax between them at 8–33 keys; a whole beam-5 decoding of the small benchmark model in
    int8 ~10% faster. In float32, MKL's small products hold their own: no gain measured. How many
    queries per row of keys it takes depends on the CPU (:func:`decoding_kernel_max_queries`)."""
    return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and k.size(-2) > 1 and not _kernel_held_off
            and not torch.is_grad_enabled() and q.size(-2) <= decoding_kernel_max_queries())


@contextmanager
def duck_sizing_off():
    """torch.compile without duck sizing inside this block: sizes of equal value (a cache of 64 keys
    and 64-wide heads, 64 sentences and 64-wide heads) stay separate symbols, instead of one that
    recompiles the graph as soon as they part. Set and restored by hand: 5 µs a call, where
    ``config.patch()`` takes 26."""
    duck, fx_config.use_duck_shape = fx_config.use_duck_shape, False
    try:
        yield
    finally:
        fx_config.use_duck_shape = duck


def compile_failure_reason(error: Exception) -> str:
    """The first line of a torch.compile failure (its backend errors run to pages), for a one-line warning."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def decoding_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
                    ) -> torch.Tensor | None:
    """:func:`attention_as_sums` through ``torch.compile`` (dynamic shapes: one compilation serves
    every cache length), or None where it cannot be compiled here (no C++ compiler, say): then a
    one-line warning, once, and the caller's usual path from then on."""
    global _compiled_attention
    if _compiled_attention is False:
        return None
    if _compiled_attention is None:
        _compiled_attention = torch.compile(attention_as_sums, dynamic=True)
    try:
        with duck_sizing_off():  # else a cache of d_k keys recompiles the kernel at the next step
            return _compiled_attention(q, k, v, mask)
    except Exception as error:  # compilation fails as a backend error of many kinds
        warnings.warn(f"compiled decoding is off: torch.compile failed here ({compile_failure_reason(error)})",
                      RuntimeWarning, stacklevel=2)
        _compiled_attention = False
        return None


CACHE_ROOM_STEP = 16  # a key/value cache with room grows to a multiple of this many positions


def cache_capacity(positions: int, growth: float = 1.5) -> int:
    """Positions a key/value buffer holding ``positions`` is made with: ``growth`` times as many,
    rounded up to a multiple of :data:`CACHE_ROOM_STEP` (so that a long generation re-copies its
    cache a few times, not once per step)."""
    return CACHE_ROOM_STEP * math.ceil(growth * positions / CACHE_ROOM_STEP)


def cache_with_room_is_faster(k: torch.Tensor) -> bool:
    """Whether a key/value cache should keep room for later steps (read through views) rather
    than be re-made at its exact size each step (:meth:`MultiHeadAttention.extend`).

    Room wins except for bfloat16 on CPU. Two Zen 5 cores, 64 sentences × 8 heads of 64, 32
    cached positions, Q Kᵀ for one query: float32 72 µs on contiguous keys, 74 µs on a view of a
    48-position buffer; bfloat16 88 vs 319 µs. A float32 cache re-made each step is a fresh
    multi-MB tensor, paged in at every step: in an int8 greedy decoding of the small benchmark
    model (6 layers) the appends took 29% of torch.profiler's self-CPU time, more than the
    attention they fed.
    """
    return not (k.device.type == "cpu" and k.dtype == torch.bfloat16)


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(T, T) boolean mask, True on and below the diagonal: position t sees positions ≤ t."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The h heads' projections are stored side by side in one (d_model, d_model) matrix per role,
    so ``q_proj(x)`` computes all of Q W_1^Q, …, Q W_h^Q at once and a reshape splits the heads.

    ``impl="sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels),
    except for the short CPU sequences where :func:`written_out_is_faster`; ``impl="manual"``
    always runs :func:`scaled_dot_product_attention` above. Both give the same result
    (tests/models/test_attention.py); asking for the weights always takes the written-out path.
    Setting ``record = True`` keeps each call's weights in ``recorded`` (for attention maps).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, impl: str = "sdpa"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.dropout = dropout
        self.impl = impl
        self.q_proj = Linear(d_model, d_model)  # W^Q: "the question"
        self.k_proj = Linear(d_model, d_model)  # W^K: "the answer"
        self.v_proj = Linear(d_model, d_model)  # W^V: "the meaning"
        self.out_proj = Linear(d_model, d_model)  # W^O: mixes the heads' outputs
        self.record = False
        self.compiled_decoding = False  # decoding steps through the compiled kernel (decoding_kernel)
        self.recorded: torch.Tensor | None = None  # (B, H, T_q, T_k) of the last call, when recording
        self.qkv_proj: nn.Module | None = None  # [W^Q W^K W^V] side by side, once fused for inference
        self.kv_proj: nn.Module | None = None  # [W^K W^V], a view of the same matrix

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, d_k)

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Lay W^Q, W^K, W^V side by side in one matrix, once, for inference.

        :meth:`_project` then multiplies by ``qkv_proj`` (self-attention) or ``kv_proj`` (the
        encoder's K, V) instead of concatenating the weights at every call. ``q_proj``, ``k_proj``
        and ``v_proj`` become views of the fused matrix, so nothing is stored twice and an update
        of either shows in both. Adds ``qkv_proj.*`` and ``kv_proj.*`` entries to the state dict:
        meant for a decoding copy of the model (:func:`seqlab.runs.for_inference`), not for training.
        """
        linears = (self.q_proj, self.k_proj, self.v_proj)
        C = self.q_proj.in_features
        weight = torch.cat([layer.weight for layer in linears])  # (3C, C)
        bias = torch.cat([layer.bias for layer in linears])
        self.qkv_proj = Linear(C, 3 * C, device="meta")
        self.kv_proj = Linear(C, 2 * C, device="meta")
        self.qkv_proj.weight, self.qkv_proj.bias = nn.Parameter(weight), nn.Parameter(bias)
        self.kv_proj.weight, self.kv_proj.bias = nn.Parameter(weight[C:]), nn.Parameter(bias[C:])
        for i, layer in enumerate(linears):
            layer.weight, layer.bias = nn.Parameter(weight[i * C:(i + 1) * C]), nn.Parameter(bias[i * C:(i + 1) * C])

    def _project(self, x: torch.Tensor, *linears: nn.Module) -> list[torch.Tensor]:
        """x W for each given projection, split into heads: [(B, H, T, d_k), …].

        Projections of the same input run as one matrix product with their weights side by side:
        one larger GEMM instead of several, and under autocast the input is cast to bfloat16 once
        instead of once per projection. The side-by-side matrix is made once by
        :meth:`fuse_projections` for inference; in training it is concatenated at each call, which
        keeps the parameters and the checkpoint layout those of the paper's four matrices.
        (Other layers, such as int8-quantized ones, keep their own calls.)
        """
        fused = {3: self.qkv_proj, 2: self.kv_proj}.get(len(linears))  # callers pass (q, k, v) or (k, v)
        if fused is not None:
            return [self._split_heads(part) for part in fused(x).chunk(len(linears), dim=-1)]
        if len(linears) == 1 or not all(isinstance(layer, nn.Linear) for layer in linears):
            return [self._split_heads(layer(x)) for layer in linears]
        weight = torch.cat([layer.weight for layer in linears])  # (n·C, C)
        bias = torch.cat([layer.bias for layer in linears])
        return [self._split_heads(part) for part in linear(x, weight, bias).chunk(len(linears), dim=-1)]

    def project_kv(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K = key W^K, V = value W^V, split into heads: (B, H, T_k, d_k) each (what a decoder caches)."""
        if key is value:
            k, v = self._project(key, self.k_proj, self.v_proj)
            return k, v
        return self._split_heads(self.k_proj(key)), self._split_heads(self.v_proj(value))

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from ``query`` (B, T_q, C) to ``key``/``value`` (B, T_k, C).

        ``mask`` is boolean, broadcastable to (B, H, T_q, T_k); ``is_causal`` adds the decoder's
        look-ahead mask (query t sees keys ≤ t). Returns (B, T_q, C) and, when ``need_weights``,
        the attention weights (B, H, T_q, T_k). ``kv``: keys and values already projected (and
        cached) by :meth:`project_kv`; ``key`` and ``value`` are then ignored. ``kv`` may hold
        fewer rows than the query, B / G: then each G consecutive query rows (the beams of one
        sentence) attend to the same keys and values, read once for all G.
        """
        if kv is None and query is key and key is value:  # self-attention: Q, K, V from one input
            q, k, v = self._project(query, self.q_proj, self.k_proj, self.v_proj)  # (B, H, T, d_k) each
        else:
            q = self._split_heads(self.q_proj(query))  # (B, H, T_q, d_k)
            k, v = kv if kv is not None else self.project_kv(key, value)  # (B, H, T_k, d_k) each
        return self.attend(q, k, v, mask, is_causal, need_weights)

    def extend(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, filled: int,
               rows: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Incremental self-attention: new positions x (N, t, C) attend to the ``filled`` cached
        positions of ``past`` K, V (N, H, ≥ filled, d_k) and to themselves. Returns (N, t, C) and
        the cache with the new K, V at positions ``filled`` … ``filled + t − 1``.

        No look-ahead mask for one new position: its future is not there yet. Several new
        positions at once (a prompt) are causal among themselves. The new K, V are written in
        place when ``past`` has room for them; otherwise the cache grows, in one of two ways
        (:func:`cache_with_room_is_faster`): into a larger buffer with room for later steps,
        which attention reads through a view of its filled part (no copy per step, no fresh
        memory to page in), or, for CPU bfloat16, by ``torch.cat`` into a tensor of exactly the
        filled size, because bf16 products on views of a larger buffer run 1.5–3.5× slower than
        on contiguous K, V, which outweighs the copy. A cache passed in is consumed: its buffers
        may be written by this step.

        ``rows`` (N, filled + 1), for one new position: the cache's K, V are read where they lie,
        key j of row i in row ``rows[i, j]`` of ``past`` (beam search's hypotheses read their
        ancestors' keys without moving them: :meth:`DecoderCache.index_select`), and the new K, V
        go to position ``filled`` of rows 0 … N − 1, where ``past`` must have room for them.
        """
        q, k, v = self._project(x, self.q_proj, self.k_proj, self.v_proj)  # (N, H, t, d_k) each
        T = filled + x.size(1)
        if rows is not None:
            for buffer, new in zip(past, (k, v)):
                buffer.narrow(0, 0, x.size(0))[:, :, filled:T] = new  # narrow: one compiled graph for N ≤ R rows
            positions = torch.arange(T, device=x.device)
            keys, values = (buffer[rows, :, positions].transpose(1, 2) for buffer in past)  # (N, H, T, d_k) each
            if torch.compiler.is_compiling():  # as sums, which read K, V where they lie (the products
                # attend() writes out inductor would replace by a fused kernel that gathers them first)
                return self._merge_heads(attention_as_sums(q, keys, values), x.size(0), 1, 1), past
            return self.attend(q, keys, values)[0], past
        if past is not None and past[0].size(2) >= T:  # room for these positions
            past[0][:, :, filled:T], past[1][:, :, filled:T] = k, v
            cache = past
        elif not cache_with_room_is_faster(k):
            cache = (k, v) if past is None else tuple(torch.cat([p[:, :, :filled], new], dim=2)
                                                      for p, new in ((past[0], k), (past[1], v)))
        else:
            cache = tuple(self._grown(p, new, filled) for p, new in ((None if past is None else past[0], k),
                                                                     (None if past is None else past[1], v)))
        keys, values = (c if c.size(2) == T else c[:, :, :T] for c in cache)  # (N, H, T, d_k) each
        out, _ = self.attend(q, keys, values, is_causal=past is None and x.size(1) > 1)
        return out, cache  # (N, t, C), K and V (N, H, ≥ filled + t, d_k)

    @staticmethod
    def _grown(past: torch.Tensor | None, new: torch.Tensor, filled: int) -> torch.Tensor:
        """A buffer (N, H, capacity, d_k) holding ``past``'s first ``filled`` positions, then ``new``,
        with room for about half as many again (so a long generation re-copies its cache a few
        times, not once per step)."""
        T = filled + new.size(2)
        buffer = new.new_empty(new.size(0), new.size(1), cache_capacity(T), new.size(3))
        if past is not None:
            buffer[:, :, :filled] = past[:, :, :filled]
        buffer[:, :, filled:T] = new
        return buffer

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
               is_causal: bool = False, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(Q Kᵀ / √d_k) V per head on projected q (B, H, T_q, d_k), k, v (B/G, H, T_k, d_k),
        then Concat(head_1, …, head_h) W^O: (B, T_q, C), and the weights when asked for."""
        B, _, T_q, _ = q.shape
        dropout = self.dropout if self.training else 0.0
        groups = B // k.size(0)
        if groups > 1:  # the G beams of a sentence become G queries against its one set of K, V
            q = q.reshape(k.size(0), groups, self.n_heads, T_q, self.d_head).transpose(1, 2)
            q = q.reshape(k.size(0), self.n_heads, groups * T_q, self.d_head)  # (B/G, H, G·T_q, d_k)
            mask = None if mask is None else mask[::groups]  # (B/G, 1, 1, T_k): one per sentence

        if (self.compiled_decoding and not (need_weights or self.record or is_causal or dropout)
                and not torch.compiler.is_compiling()  # a compiled step lowers attention itself
                and decoding_kernel_applies(q, k) and (out := decoding_kernel(q, k, v, mask)) is not None):
            return self._merge_heads(out, B, T_q, groups), None

        manual = need_weights or self.record or self.impl == "manual" or written_out_is_faster(q, k)
        if is_causal and (manual or mask is not None):
            # Only SDPA's fused kernel takes the look-ahead mask as a flag; fold it in otherwise.
            look_ahead = causal_mask(T_q, q.device)  # (T_q, T_k), self-attention: T_q = T_k
            mask = look_ahead if mask is None else mask & look_ahead
            is_causal = False

        weights = None
        if manual:
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal
            )

        if groups > 1 and weights is not None:  # back to one row per beam: (B, H, T_q, T_k)
            weights = weights.view(B // groups, self.n_heads, groups, T_q, -1).transpose(1, 2).reshape(
                B, self.n_heads, T_q, -1)
        if self.record:
            self.recorded = weights.detach()
        return self._merge_heads(out, B, T_q, groups), weights  # (B, T_q, C)

    def _merge_heads(self, out: torch.Tensor, B: int, T_q: int, groups: int) -> torch.Tensor:
        """Concat(head_1, …, head_h) W^O of the heads' outputs (B/G, H, G·T_q, d_k): (B, T_q, C)."""
        if groups > 1:  # back to one row per beam: (B, H, T_q, d_k)
            out = out.view(B // groups, self.n_heads, groups, T_q, -1).transpose(1, 2).reshape(B, self.n_heads, T_q, -1)
        out = out.transpose(1, 2).reshape(B, T_q, self.n_heads * self.d_head)  # Concat(head_1, …, head_h)
        return self.out_proj(out)
