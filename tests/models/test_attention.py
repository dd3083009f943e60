import shutil
import warnings

import pytest
import torch
from torch import nn

from seqlab.models import attention
from seqlab.models.attention import (
    CACHE_ROOM_STEP,
    MultiHeadAttention,
    attention_as_sums,
    causal_mask,
    scaled_dot_product_attention,
    written_out_is_faster,
)

needs_cxx = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                               reason="torch.compile's CPU kernels need a C++ compiler")


def _copy_to_torch_mha(ours: MultiHeadAttention, d_model: int, n_heads: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


def _padding_mask(lengths, T):
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)


def test_written_out_attention_is_softmax_of_scaled_scores():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 5, 4).unbind(0)
    out, w = scaled_dot_product_attention(q, k, v)
    expected_w = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1)  # √d_k = 2
    torch.testing.assert_close(w, expected_w)
    torch.testing.assert_close(out, expected_w @ v)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 5))


@pytest.mark.parametrize("causal", [False, True])
def test_manual_path_equals_sdpa_path(causal):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    x = torch.randn(3, 7, 32)
    mask = _padding_mask([7, 5, 2], 7)[:, None, None, :]
    mha.impl = "sdpa"
    fast, _ = mha(x, x, x, mask=mask, is_causal=causal)
    mha.impl = "manual"
    slow, weights = mha(x, x, x, mask=mask, is_causal=causal)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    assert weights.shape == (3, 4, 7, 7)
    assert torch.all(weights[1, :, :, 5:] == 0), "padded keys must get zero weight"
    if causal:
        assert torch.all(weights.triu(1) == 0), "no query may attend to a later key"


def test_causal_flag_alone_equals_explicit_mask():
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 6, 16)
    flagged, _ = mha(x, x, x, is_causal=True)
    explicit, _ = mha(x, x, x, mask=causal_mask(6))
    torch.testing.assert_close(flagged, explicit, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_equals_torch_multihead_attention(impl):
    torch.manual_seed(0)
    d, h = 32, 4
    ours = MultiHeadAttention(d, h, impl=impl).eval()
    ref = _copy_to_torch_mha(ours, d, h)
    query, memory = torch.randn(3, 5, d), torch.randn(3, 9, d)
    lengths = [9, 4, 1]
    keep = _padding_mask(lengths, 9)
    out, w = ours(query, memory, memory, mask=keep[:, None, None, :], need_weights=True)
    ref_out, ref_w = ref(query, memory, memory, key_padding_mask=~keep, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(30, 4)


def test_short_bfloat16_sequences_on_cpu_take_the_written_out_path():
    q16 = torch.zeros(2, 4, 32, 8, dtype=torch.bfloat16)
    assert written_out_is_faster(q16, q16)
    assert not written_out_is_faster(q16.float(), q16.float())  # float32: the fused kernel
    long16 = torch.zeros(2, 4, 256, 8, dtype=torch.bfloat16)
    assert not written_out_is_faster(long16, long16)  # long keys: the fused kernel again


@pytest.mark.parametrize("causal", [False, True])
def test_bfloat16_attention_follows_float32_and_trains(causal):
    """Under bf16 autocast (the written-out path, by the rule above) forward and gradients stay
    close to float32's; the fused Q/K/V projection gets the same gradients as separate ones."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(64, 4)
    x = torch.randn(3, 20, 64, requires_grad=True)
    mask = _padding_mask([20, 11, 3], 20)[:, None, None, :]
    ref, _ = mha(x, x, x, mask=mask, is_causal=causal)
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in (x, mha.q_proj.weight, mha.v_proj.weight)]
    x.grad = None
    mha.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = mha(x, x, x, mask=mask, is_causal=causal)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    for got, want in zip((x.grad, mha.q_proj.weight.grad, mha.v_proj.weight.grad), ref_grads):
        assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99


def test_cross_attention_projects_keys_and_values_like_separate_layers():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    memory = torch.randn(2, 9, 32)
    k, v = mha.project_kv(memory, memory)  # one matrix product for both
    torch.testing.assert_close(k, mha._split_heads(mha.k_proj(memory)))
    torch.testing.assert_close(v, mha._split_heads(mha.v_proj(memory)))


def test_beams_sharing_one_sentences_keys_and_values_equal_repeated_copies():
    """Beam search keeps the encoder's K, V once per sentence: B·G query rows against B rows of
    K, V must give what G repeated copies give (also the weights, when recorded)."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    B, G, S = 3, 5, 9
    memory, query = torch.randn(B, S, 32), torch.randn(B * G, 1, 32)
    mask = _padding_mask([9, 6, 2], S)
    kv = mha.project_kv(memory, memory)  # (B, H, S, d_k)
    repeated = tuple(t.repeat_interleave(G, dim=0) for t in kv)  # (B·G, H, S, d_k)
    rep_mask = mask.repeat_interleave(G, dim=0)[:, None, None, :]
    for impl in ("sdpa", "manual"):
        mha.impl = impl
        want, want_w = mha(query, None, None, mask=rep_mask, kv=repeated, need_weights=True)
        got, got_w = mha(query, None, None, mask=rep_mask, kv=kv, need_weights=True)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_w, want_w)
        torch.testing.assert_close(mha(query, None, None, mask=rep_mask, kv=kv)[0], want)


def test_fused_projections_give_the_same_attention_and_share_the_weights():
    """fuse_projections lays W^Q, W^K, W^V side by side once (for inference): self-attention,
    cross-attention and incremental decoding give what the separate matrices give, and the
    separate layers become views of the fused matrix (stored once, kept in step)."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    x, memory = torch.randn(2, 6, 32), torch.randn(2, 9, 32)
    want_self = mha(x, x, x, is_causal=True)[0]
    want_cross = mha(x, memory, memory)[0]
    want_step, want_cache = mha.extend(x[:, :5], None, 0)
    mha.fuse_projections()
    assert mha.qkv_proj.weight.shape == (96, 32) and mha.kv_proj.weight.shape == (64, 32)
    torch.testing.assert_close(mha(x, x, x, is_causal=True)[0], want_self)
    torch.testing.assert_close(mha(x, memory, memory)[0], want_cross)
    got_step, got_cache = mha.extend(x[:, :5], None, 0)
    torch.testing.assert_close(got_step, want_step)
    torch.testing.assert_close([c[:, :, :5] for c in got_cache], [c[:, :, :5] for c in want_cache])  # filled part
    with torch.no_grad():
        mha.k_proj.weight.mul_(2)  # a change to one view shows in the fused matrix
    torch.testing.assert_close(mha.kv_proj.weight[:32], mha.k_proj.weight)
    assert mha.qkv_proj.weight.untyped_storage().data_ptr() == mha.v_proj.weight.untyped_storage().data_ptr()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_incremental_attention_equals_causal_attention_and_keeps_room_where_views_are_fast(dtype):
    """extend() one position at a time after a prompt gives the rows of full causal attention.
    A float32 cache keeps room and grows a few times, not at every step; a CPU bfloat16 cache is
    re-made at its exact size (its products run faster on contiguous K, V)."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval().to(dtype)
    x = torch.randn(3, 40, 32, dtype=dtype)
    with torch.no_grad():
        want = mha(x, x, x, is_causal=True)[0]  # (B, T, C)
        out, cache = mha.extend(x[:, :5], None, 0)  # a prompt of 5
        tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)
        torch.testing.assert_close(out, want[:, :5], **tol)
        new_buffers = 0  # steps that moved the cache to a new tensor (the old one is alive until then)
        for t in range(5, 40):
            before = cache[0].data_ptr()
            out, cache = mha.extend(x[:, t : t + 1], cache, t)
            torch.testing.assert_close(out[:, 0], want[:, t], **tol)
            new_buffers += cache[0].data_ptr() != before
    if dtype == torch.float32:
        assert cache[0].size(2) >= 40 and cache[0].size(2) % CACHE_ROOM_STEP == 0
        assert new_buffers <= 3  # 35 steps: grew at most three times
    else:
        assert cache[0].size(2) == 40 and new_buffers == 35


def test_attention_as_sums_equals_written_out_attention():
    """The decoding kernel's formula, run eagerly: the products and the softmax of
    scaled_dot_product_attention, with a padding mask broadcast over heads and queries."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = _padding_mask([7, 3], 7)[:, None, None, :]  # (B, 1, 1, T_k)
    torch.testing.assert_close(attention_as_sums(q, k, v, mask), scaled_dot_product_attention(q, k, v, mask)[0])
    torch.testing.assert_close(attention_as_sums(q, k, v), scaled_dot_product_attention(q, k, v)[0])


def _decoding_steps(mha: MultiHeadAttention, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor, beams: int):
    """Self-attention one position at a time after a prompt, and the beams of each sentence
    against its one set of encoder K, V: what a beam search asks of attention."""
    outs = []
    with torch.no_grad():
        out, cache = mha.extend(x[:, :3], None, 0)  # a prompt: causal, always the usual path
        outs.append(out)
        for t in range(3, x.size(1)):
            out, cache = mha.extend(x[:, t : t + 1], cache, t)
            outs.append(out)
        kv = mha.project_kv(memory, memory)  # (B, H, S, d_k), B = rows / beams
        rows = mask.repeat_interleave(beams, dim=0)[:, None, None, :]
        outs.append(mha(x[:, -1:], None, None, mask=rows, kv=kv)[0])
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("amx", [True, False])
def test_decoding_kernel_takes_grouped_queries_only_without_amx(monkeypatch, amx):
    """A single query against a cache takes the compiled kernel on every CPU; a sentence's beams
    against its source (several queries per row of keys) only where there is no AMX, whose tile
    kernels multiply those faster. Never with gradients, in float32 or against a single key."""
    monkeypatch.setattr(attention, "has_amx", lambda: amx)
    keys = torch.randn(4, 2, 9, 8).bfloat16()
    one, beams = torch.randn(4, 2, 1, 8).bfloat16(), torch.randn(4, 2, 5, 8).bfloat16()
    with torch.no_grad():
        assert attention.decoding_kernel_applies(one, keys)
        assert attention.decoding_kernel_applies(beams, keys) is not amx
        assert not attention.decoding_kernel_applies(torch.randn(4, 2, 9, 8).bfloat16(), keys)  # a prompt
        assert not attention.decoding_kernel_applies(one.float(), keys.float())
        assert not attention.decoding_kernel_applies(one, keys[:, :, :1])
    assert not attention.decoding_kernel_applies(one, keys)  # gradients on


@needs_cxx
def test_compiled_decoding_follows_the_usual_path(monkeypatch):
    """compiled_decoding sends bfloat16 decoding steps through the torch.compile'd kernel (it
    compiles, no fallback warning) and gives what the batched products give, to bf16 rounding."""
    monkeypatch.setattr(attention, "_compiled_attention", None)
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval().bfloat16()
    mha.fuse_projections()
    B, beams = 2, 3
    x, memory = torch.randn(B * beams, 9, 32).bfloat16(), torch.randn(B, 6, 32).bfloat16()
    mask = _padding_mask([6, 4], 6)
    want = _decoding_steps(mha, x, memory, mask, beams)
    mha.compiled_decoding = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compilation would warn
        got = _decoding_steps(mha, x, memory, mask, beams)
    assert callable(attention._compiled_attention)  # it was compiled and used
    torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=3e-2)


@needs_cxx
def test_compiled_kernel_serves_a_cache_as_long_as_a_head_from_one_compilation(monkeypatch):
    """A cache of d_k keys (64 = 64) and the next step's 65: one graph, not a second one that duck
    sizing (one symbol for equal sizes) would force."""
    monkeypatch.setattr(attention, "_compiled_attention", None)
    code = attention.attention_as_sums.__code__
    torch._dynamo.reset_code(code)  # other tests' graphs, which one of these calls might reuse,
    torch._dynamo.reset_code_state()  # and the sizes they saw vary, which dynamo would never duck-size
    graphs = lambda: len(torch._dynamo.eval_frame._debug_get_cache_entry_list(code))  # noqa: E731
    torch.manual_seed(0)
    q = torch.randn(6, 2, 1, 64).bfloat16()  # (B, H, 1, d_k)
    for keys in (64, 65, 80):
        k, v = torch.randn(2, 6, 2, keys, 64).bfloat16()  # (B, H, T_k, d_k) each
        with torch.no_grad():
            got = attention.decoding_kernel(q, k, v, None)
        want = attention.attention_as_sums(q, k, v, None)
        torch.testing.assert_close(got.float(), want.float(), atol=1e-2, rtol=1e-2)
    assert graphs() == 1


def test_compiled_decoding_falls_back_with_one_warning(monkeypatch):
    """Where torch.compile cannot build the kernel, decoding warns once and goes on as without it."""
    def failing_compile(fn, **options):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found\n(long backend traceback)")
        return compiled

    monkeypatch.setattr(attention, "_compiled_attention", None)
    monkeypatch.setattr(torch, "compile", failing_compile)
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval().bfloat16()
    x, memory = torch.randn(3, 6, 32).bfloat16(), torch.randn(1, 5, 32).bfloat16()
    mask = _padding_mask([5], 5)
    want = _decoding_steps(mha, x, memory, mask, 3)
    mha.compiled_decoding = True
    with pytest.warns(RuntimeWarning, match=r"compiled decoding is off: torch.compile failed here \(no C\+\+ compiler found\)"):
        got = _decoding_steps(mha, x, memory, mask, 3)
    assert attention._compiled_attention is False
    torch.testing.assert_close(got, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # once only
        _decoding_steps(mha, x, memory, mask, 3)
