"""Incremental decoding (key/value caches, carried RNN states) gives exactly what decoding the
whole prefix again at every step gives, for every model kind and search."""

import pytest
import torch

from seqlab.config import MODEL_CONFIGS
from seqlab.decoding.sampling import generate
from seqlab.decoding.search import beam_search, greedy_search
from seqlab.models import build_model
from tests.conftest import TINY_MODELS
from tests.decoding.test_search import sources

KINDS = {
    "transformer/post": dict(TINY_MODELS["transformer"], n_encoder_layers=2, n_decoder_layers=2),
    "transformer/pre-learned": dict(TINY_MODELS["transformer"], layer_norm="pre", positional="learned"),
    "rnn_seq2seq/additive": TINY_MODELS["rnn_seq2seq"],
    "rnn_seq2seq/plain-lstm": dict(TINY_MODELS["rnn_seq2seq"], attention="none", cell="lstm", n_layers=2),
    "vector_to_seq": TINY_MODELS["vector_to_seq"],
}


def model_and_source(name):
    torch.manual_seed(0)
    options = KINDS[name]
    model = build_model(MODEL_CONFIGS[options["kind"]](**options), 20, 20).eval()
    src = torch.randn(4, 40) if name == "vector_to_seq" else sources([5, 9, 3, 7], seed=1)
    return model, src


@pytest.mark.parametrize("name", list(KINDS))
def test_cached_search_equals_recomputing_the_prefix(name):
    model, src = model_and_source(name)
    for run in (lambda c: greedy_search(model, src, 1.5, 6, use_cache=c),
                lambda c: beam_search(model, src, 4, 1.0, 1.5, 6, nbest=3, use_cache=c)):
        cached, full = run(True), run(False)
        assert [[h.tokens for h in hs] for hs in cached] == [[h.tokens for h in hs] for hs in full]
        for a, b in zip(cached, full):
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_step_logits_equal_full_decode_logits():
    model, src = model_and_source("transformer/post")
    enc = model.encode(src)
    tokens = torch.randint(4, 20, (4, 7), generator=torch.Generator().manual_seed(2))
    full = model.decode(tokens, enc)  # (B, T, V)
    cache = None
    for t in range(7):
        logits, cache = model.decode_step(tokens[:, t : t + 1], enc, cache)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-4)
    keys = cache.self_kv[0][0]  # (N, H, room ≥ 7, d_k): a float32 cache keeps room for later steps
    assert cache.position == 7 and keys.shape[:2] == (4, 2) and keys.size(2) >= 7 and keys.size(3) == 16


def test_beam_steps_reading_the_cache_in_place_equal_moving_it():
    """Beam steps whose cache stays in place (read through ``kv_rows``, as compiled beam search
    keeps it) give the logits of steps whose cache is moved to each survivor's row."""
    from tests.decoding.test_compiled import _beam_steps

    model, src = model_and_source("transformer/pre-learned")
    moved = _beam_steps(model.decode_step, model, src)
    in_place = _beam_steps(model.decode_step, model, src, kv_in_place=True)
    for a, b in zip(in_place, moved, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["gpt", "rnn_lm"])
def test_language_models_step_equals_full_and_generation_is_unchanged(kind):
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS[kind](**TINY_MODELS[kind]), 30, 30).eval()
    tokens = torch.randint(4, 30, (3, 9), generator=torch.Generator().manual_seed(3))
    full = model.decode(tokens)
    logits, cache = model.decode_step(tokens[:, :5], None, None)  # a prompt of 5 at once
    torch.testing.assert_close(logits, full[:, 4], atol=1e-5, rtol=1e-4)
    for t in range(5, 9):
        logits, cache = model.decode_step(tokens[:, t : t + 1], None, cache)
        torch.testing.assert_close(logits, full[:, t], atol=1e-5, rtol=1e-4)
    greedy = generate(model, [5, 6, 7], max_new_tokens=12, temperature=0)[0]
    expected, prefix = [], torch.tensor([[2, 5, 6, 7]])
    for _ in range(len(greedy)):
        nxt = int(model.decode(prefix)[0, -1].argmax())
        expected.append(nxt)
        prefix = torch.cat([prefix, torch.tensor([[nxt]])], dim=1)
    assert greedy == expected


@pytest.mark.parametrize("kind", ["gpt", "rnn_lm"])
def test_sampling_with_the_cache_draws_what_recomputing_the_prefix_draws(kind):
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS[kind](**TINY_MODELS[kind]), 30, 30).eval()
    for options in (dict(temperature=1.0), dict(temperature=0.8, top_k=8), dict(temperature=1.2, top_p=0.9)):
        run = lambda cache: generate(model, [5, 6, 7], max_new_tokens=12, seed=4, num_samples=4,  # noqa: E731
                                     use_cache=cache, **options)
        cached = run(True)
        assert cached == run(False)
        assert len({tuple(text) for text in cached}) > 1  # sampled, not greedy: the samples differ
