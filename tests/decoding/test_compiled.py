"""Decoding steps compiled whole (seqlab.decoding.compiled): the eager step's logits, to bf16
rounding, through the compiled graphs where they apply (greedy steps and beam steps), and the
eager step elsewhere."""

import shutil

import pytest
import torch

from seqlab.config import MODEL_CONFIGS
from seqlab.data.tokenizer import BOS
from seqlab.decoding.compiled import CompiledStep, _beam_step_by_source
from seqlab.decoding.packed import can_quantize
from seqlab.decoding.search import beam_search, greedy_search, log_prob_top_k
from seqlab.hardware import has_bf16_units
from seqlab.models import build_model
from seqlab.runs import for_inference
from tests.conftest import TINY_MODELS
from tests.decoding.test_search import sources

needs_cxx = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                               reason="torch.compile's CPU kernels need a C++ compiler")
PRECISIONS = ["bf16", pytest.param("int8", marks=pytest.mark.skipif(
    not (can_quantize(torch.nn.Linear(2, 2)) and has_bf16_units(torch.device("cpu"))),
    reason="int8 around bf16 needs oneDNN's int8 kernels and bf16 matrix units"))]


def _transformer() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = dict(TINY_MODELS["transformer"], n_decoder_layers=2)
    return build_model(MODEL_CONFIGS["transformer"](**cfg), 20, 20).eval()


def _steps(step, model, src, tokens):
    """Logits of decoding ``tokens`` (B, T) one at a time after <bos>, ``step`` for all but the first."""
    with torch.no_grad():
        enc = model.encode(src)
        logits, cache = model.decode_step(tokens[:, :1], enc, None)
        out = [logits]
        for t in range(1, tokens.size(1)):
            logits, cache = step(tokens[:, t : t + 1], enc, cache)
            out.append(logits)
    return torch.stack(out, 1).float()  # (B, T, V)


def _beam_steps(step, model, src, K=3, kv_in_place=False):
    """Logits of beam steps (K rows per sentence) as beam search takes them: the first step on one
    row per sentence, then ``step`` on every row, the cache reordered among each sentence's beams
    after every step (its K, V moved, or left in place and read through ``kv_rows``), and
    sentence 1 leaving the batch after the third."""
    g = torch.Generator().manual_seed(3)
    out = []
    with torch.no_grad():
        first = model.encode(src)
        n, enc = src.size(0), first.repeat_for_beams(K)
        _, cache = model.decode_step(torch.full((n, 1), BOS), first, None)
        cache = cache.index_select(torch.arange(n).repeat_interleave(K), same_sources=True, kv_in_place=kv_in_place)
        for t in range(1, 7):
            logits, cache = step(torch.randint(4, 20, (n * K, 1), generator=g), enc, cache)
            out.append(logits.float())
            parents = torch.arange(n)[:, None] * K + torch.randint(0, K, (n, K), generator=g)  # (n, K) rows
            sources = None
            if t == 3:
                sources = torch.tensor([i for i in range(n) if i != 1])
                parents, enc, n = parents[sources], enc.keep_sources(sources), n - 1
            cache = cache.index_select(parents.view(-1), same_sources=True, sources=sources, kv_in_place=kv_in_place)
            assert (cache.kv_rows is not None) == kv_in_place
    return out


@needs_cxx
@pytest.mark.parametrize("precision", PRECISIONS)
def test_compiled_steps_give_the_eager_logits(precision):
    model = for_inference(_transformer(), precision, compile=True)
    assert isinstance(model.compiled_step, CompiledStep)
    src = sources([5, 9, 3, 7], seed=1)
    tokens = torch.randint(4, 20, (4, 6), generator=torch.Generator().manual_seed(2))
    want = _steps(model.decode_step, model, src, tokens)
    got = _steps(lambda *args: model.compiled_step(*args) or model.decode_step(*args), model, src, tokens)
    assert model.compiled_step.compiled is not None and not model.compiled_step.failed
    # fused loops round bf16 differently, and int8 quantizes what they give
    torch.testing.assert_close(got, want, atol=0.05 if precision == "bf16" else 0.1, rtol=0.02)


@needs_cxx
def test_compiled_greedy_steps_store_into_a_reserved_cache_in_place():
    """A greedy search reserves room for all its steps before the first compiled one: the compiled
    steps then store each new K, V into those buffers, where eager bf16 steps re-make the cache at
    its exact size, and give the eager logits."""
    model = for_inference(_transformer(), "bf16", compile=True)
    src = sources([5, 9, 3, 7], seed=1)
    tokens = torch.randint(4, 20, (4, 6), generator=torch.Generator().manual_seed(2))
    want = _steps(model.decode_step, model, src, tokens)
    buffers = []

    def reserving_step(new_tokens, enc, cache):
        if cache.position == 2:
            cache = cache.reserve(tokens.size(1) + 1)
        logits, cache = model.compiled_step(new_tokens, enc, cache) or model.decode_step(new_tokens, enc, cache)
        buffers.append(cache.self_kv[0][0])
        return logits, cache

    got = _steps(reserving_step, model, src, tokens)
    assert model.compiled_step.compiled is not None and not model.compiled_step.failed
    assert buffers[0].size(2) == 2  # an eager bf16 step's cache: its exact size
    assert buffers[1].size(2) == 16 and len({b.data_ptr() for b in buffers[1:]}) == 1  # reserved, filled in place
    torch.testing.assert_close(got, want, atol=0.05, rtol=0.02)


@needs_cxx
@pytest.mark.parametrize("precision", PRECISIONS)
def test_compiled_beam_steps_give_the_eager_logits_in_one_graph(precision):
    """Beam steps through their own graph, reading the cache in place as compiled beam search does:
    the eager logits of a moved cache, as sentences leave the batch too (fewer rows than the
    buffers then), from one compilation (the beam count a constant, the number of sentences
    symbolic)."""
    code = _beam_step_by_source.__code__
    torch._dynamo.reset_code(code)  # other tests' graphs, which these steps might reuse,
    torch._dynamo.reset_code_state()  # and the sizes they saw vary, which dynamo would never duck-size
    graphs = lambda: len(torch._dynamo.eval_frame._debug_get_cache_entry_list(code))  # noqa: E731
    model = for_inference(_transformer(), precision, compile=True)
    src = sources([5, 9, 3, 7] * 4, seed=1)  # 16 sentences, as many as a head is wide: kept apart
    want = _beam_steps(model.decode_step, model, src)
    got = _beam_steps(lambda *args: model.compiled_step(*args) or model.decode_step(*args), model, src,
                      kv_in_place=True)
    assert model.compiled_step.compiled_beams is not None and not model.compiled_step.failed
    assert graphs() == 1
    assert [g.shape for g in got] == [w.shape for w in want]  # 16 sentences × 3 beams, then 15 × 3
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0.05 if precision == "bf16" else 0.1, rtol=0.02)


@needs_cxx
def test_compiled_choice_of_candidates_gives_the_eager_one():
    """The searches' k best next tokens and their log-probabilities through torch.compile, at
    several batch sizes (dynamic shapes: one compilation for every batch, and one more for
    greedy's k = 1, which torch specializes) and for greedy and beam 5."""
    step = for_inference(_transformer(), "bf16", compile=True).compiled_step
    for rows, k in ((64, 1), (37, 1), (320, 10), (9, 10)):
        logits = (torch.randn(rows, 1000, generator=torch.Generator().manual_seed(rows)) * 3).bfloat16()
        got, want = step.log_prob_top_k(logits, k), log_prob_top_k(logits, k)
        assert not step.failed and torch.equal(logits.gather(1, got[1]), logits.gather(1, want[1]))
        torch.testing.assert_close(got[0], want[0])  # float32 sums in another order


def test_searches_take_the_compiled_steps_from_the_third_on(monkeypatch):
    """Greedy steps from the third on go through what torch.compile returned for the greedy step
    (their cache given room for the whole search before the first of them),
    beam steps through what it returned for the beams' step, their rows given by sentence (n, K);
    both searches choose every step's candidates through it (torch.compile stands in here for a
    recorder of the calls: the tests above compile for real)."""
    greedy_calls, beam_calls, choices, capacities = [], [], [], set()

    def recording_compile(fn, **options):
        if fn is log_prob_top_k:
            def choose(logits, k):
                choices.append(k)
                return fn(logits, k)
            return choose

        def compiled(*args):
            if fn is _beam_step_by_source:  # (decode_step, tokens (n, K, 1), src_mask, self_kv, cross_kv,
                # position, kv_rows)
                beam_calls.append((args[5], tuple(args[1].shape)))
                assert args[6].shape == (*args[1].shape[:2], args[5])  # the K, V read in place
            else:
                greedy_calls.append(args[2].position)
                capacities.add(args[2].self_kv[0][0].size(2))
            return fn(*args)
        return compiled

    monkeypatch.setattr(torch, "compile", recording_compile)
    model = for_inference(_transformer(), "bf16", compile=True)
    eager = for_inference(_transformer(), "bf16")
    src = sources([5, 9, 3, 7], seed=1)
    with torch.no_grad():
        hyps = beam_search(model, src, beam_size=3)
        positions = [position for position, _ in beam_calls]
        assert greedy_calls == [] and min(positions) == 2 and positions == sorted(positions)
        assert {shape[1:] for _, shape in beam_calls} == {(3, 1)} and beam_calls[0][1][0] == 4  # 4 sentences × 3 beams
        assert all(shape[0] > 1 for _, shape in beam_calls)  # a last sentence alone steps eagerly
        assert len(choices) >= len(beam_calls) + 2 and set(choices) == {6}  # every step; 2K candidates
        assert [h[0].tokens for h in hyps] == [h[0].tokens for h in beam_search(eager, src, beam_size=3)]
        choices.clear()
        hyps = greedy_search(model, src)
        assert greedy_calls and min(greedy_calls) == 2 and greedy_calls == sorted(greedy_calls)
        assert len(capacities) == 1 and capacities.pop() > max(greedy_calls) + 1  # room reserved once for all
        assert len(choices) == len(greedy_calls) + 2 and set(choices) == {1}  # every step, the first two too
        assert [h[0].tokens for h in hyps] == [h[0].tokens for h in greedy_search(eager, src)]


def test_steps_before_the_compiled_ones_leave_the_attention_kernel_alone(monkeypatch):
    """A search's first two steps run eagerly without the compiled attention kernel (compiling its
    graphs for two steps would cost more than they save), greedy and beam search alike."""
    from seqlab.models import attention

    in_step, kernel_calls = [False], []

    def recording_compile(fn, **options):
        if fn is log_prob_top_k:
            return fn

        def compiled(*args):
            in_step[0] = True
            try:
                return fn(*args)
            finally:
                in_step[0] = False
        return compiled

    def recording_kernel(q, k, v, mask):
        kernel_calls.append(in_step[0])
        return None  # the caller's usual attention

    monkeypatch.setattr(torch, "compile", recording_compile)
    monkeypatch.setattr(attention, "decoding_kernel", recording_kernel)
    model = for_inference(_transformer(), "bf16", compile=True)
    src = sources([5, 9, 3, 7], seed=1)
    with torch.no_grad():
        greedy_search(model, src)
        assert kernel_calls and all(kernel_calls)  # only inside the (here recorded) compiled steps
        kernel_calls.clear()
        beam_search(model, src, beam_size=3)
        assert kernel_calls and all(kernel_calls)


def test_compiled_steps_only_for_bf16_transformers_on_cpu():
    assert not hasattr(for_inference(_transformer(), "fp32", compile=True), "compiled_step")  # gains too little
    assert not hasattr(for_inference(_transformer(), "bf16"), "compiled_step")  # not asked for
    gpt = build_model(MODEL_CONFIGS["gpt"](**TINY_MODELS["gpt"]), 20, 20)
    assert not hasattr(for_inference(gpt, "bf16", compile=True), "compiled_step")  # generation samples eagerly


def test_compiled_steps_fall_back_to_eager_with_one_warning(monkeypatch):
    def failing_compile(fn, **options):
        def compiled(*args):
            raise RuntimeError("no C++ compiler found\n(long backend traceback)")
        return compiled

    model = for_inference(_transformer(), "bf16", compile=True)
    eager = for_inference(_transformer(), "bf16")
    monkeypatch.setattr(torch, "compile", failing_compile)
    src = sources([5, 9, 3, 7], seed=1)
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=r"compiled decoding steps are off: torch.compile "
                                                             r"failed here \(no C\+\+ compiler found\)"):
        got = greedy_search(model, src)
    assert model.compiled_step.failed
    with torch.no_grad():
        assert [h[0].tokens for h in got] == [h[0].tokens for h in greedy_search(eager, src)]
