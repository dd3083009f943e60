import math

import pytest
import torch
from torch import nn

from seqlab.config import TransformerConfig
from seqlab.data.tokenizer import BOS, EOS, PAD
from seqlab.decoding.search import (beam_search, greedy_search, length_penalty, log_prob_top_k, search,
                                   top_continuations)
from seqlab.models import build_model
from seqlab.models.interface import EncoderOutput

A, B = 4, 5


class BigramModel(nn.Module):
    """A stand-in decoder whose next-token distribution depends only on the previous token."""

    max_positions = 64

    def __init__(self, probs: dict[int, dict[int, float]], vocab: int = 6):
        super().__init__()
        table = torch.full((vocab, vocab), -1e9)
        for prev, row in probs.items():
            for tok, p in row.items():
                table[prev, tok] = math.log(p)
        self.table = table

    def encode(self, src):
        return EncoderOutput(torch.zeros(*src.shape, 1), src != PAD)

    def decode(self, tgt_in, enc):
        return self.table[tgt_in]  # (B, T, V) logits


# Greedy takes A (0.6) and wanders; beam search finds B <eos> with probability 0.4 · 0.99.
TRAP = BigramModel({BOS: {A: 0.6, B: 0.4}, A: {A: 0.4, B: 0.3, EOS: 0.3}, B: {EOS: 0.99, A: 0.01}})


def random_transformer(seed=0):
    torch.manual_seed(seed)
    cfg = TransformerConfig(d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0,
                            max_positions=64)
    return build_model(cfg, 20, 20).eval()


def sources(lengths, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.full((len(lengths), max(lengths) + 1), PAD)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(4, vocab, (n,), generator=g)
        src[i, n] = EOS
    return src


def test_beam_search_finds_what_greedy_misses():
    src = torch.tensor([[A, A, EOS]])
    greedy = greedy_search(TRAP, src, max_len_ratio=1.0, max_len_extra=3)[0][0]
    beam = beam_search(TRAP, src, beam_size=2, length_penalty_alpha=0.0, max_len_ratio=1.0, max_len_extra=3)[0][0]
    assert greedy.tokens[0] == A
    assert beam.tokens == [B]
    assert beam.score == pytest.approx(math.log(0.4 * 0.99), abs=1e-5)
    assert beam.score > greedy.score


def test_nbest_is_sorted_and_distinct():
    src = torch.tensor([[A, A, EOS]])
    hyps = beam_search(TRAP, src, beam_size=4, length_penalty_alpha=0.0, max_len_ratio=1.0, max_len_extra=3, nbest=4)[0]
    assert len(hyps) == 4
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(h.tokens) for h in hyps}) == 4
    assert hyps[1].tokens == [A]  # A <eos>: 0.6 · 0.3 = 0.18, the runner-up


def test_beam_wider_than_the_vocabulary():
    """Beam 8 over 6 tokens: the first step has fewer continuations than beams (the rest start
    dead), and the search still finds the best hypothesis and distinct runners-up."""
    src = torch.tensor([[A, A, EOS]])
    hyps = beam_search(TRAP, src, beam_size=8, length_penalty_alpha=0.0, max_len_ratio=1.0, max_len_extra=3, nbest=8)[0]
    assert hyps[0].tokens == [B]
    assert hyps[0].score == pytest.approx(math.log(0.4 * 0.99), abs=1e-5)
    assert hyps[1].tokens == [A]
    assert len({tuple(h.tokens) for h in hyps}) == len(hyps)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_length_penalty_of_wu_et_al():
    assert length_penalty(1, 1.0) == pytest.approx(1.0)
    assert length_penalty(7, 0.6) == pytest.approx((12 / 6) ** 0.6)
    assert length_penalty(10, 0.0) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_equals_greedy(seed):
    model = random_transformer(seed)
    src = sources([5, 9, 3, 7], seed=seed)
    greedy = greedy_search(model, src, 1.5, 5)
    beam = beam_search(model, src, beam_size=1, max_len_ratio=1.5, max_len_extra=5)
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam]


def test_batched_search_equals_one_sentence_at_a_time():
    model = random_transformer(3)
    lengths = [6, 2, 9]
    src = sources(lengths, seed=3)
    for algo in (lambda s: greedy_search(model, s, 1.5, 4), lambda s: beam_search(model, s, 3, 1.0, 1.5, 4)):
        together = [h[0].tokens for h in algo(src)]
        alone = [algo(src[i : i + 1, : n + 1])[0][0].tokens for i, n in enumerate(lengths)]
        assert together == alone


def test_outputs_respect_the_length_limit():
    model = random_transformer(4)
    src = sources([4, 8])
    for hyps in (greedy_search(model, src, 0.5, 1), beam_search(model, src, 3, 1.0, 0.5, 1, nbest=3)):
        for h, n in zip(hyps, [4, 8]):
            # +1: the source's <eos> counts toward its length; the limit includes the output's <eos>
            assert all(len(x.tokens) + 1 <= math.floor(0.5 * (n + 1)) + 1 for x in h)


def test_search_validates_beam_size():
    with pytest.raises(ValueError, match="beam size"):
        search(TRAP, torch.tensor([[A, EOS]]), beam_size=0)


def encoder_decoder_models():
    from seqlab.config import RNNSeq2SeqConfig, VectorToSeqConfig

    torch.manual_seed(5)
    models = {"transformer": random_transformer(5)}
    for attention in ("none", "dot", "general", "additive"):
        cfg = RNNSeq2SeqConfig(kind="rnn_seq2seq", attention=attention, cell="lstm", embed_dim=16, hidden_size=32,
                               bidirectional=attention == "dot")
        models[f"rnn_seq2seq/{attention}"] = build_model(cfg, 20, 20).eval()
    for condition in ("init_state", "prefix"):
        cfg = VectorToSeqConfig(kind="vector_to_seq", input_dim=6, condition=condition, embed_dim=16, hidden_size=32)
        models[f"vector_to_seq/{condition}"] = build_model(cfg, 0, 20).eval()
    return models


@pytest.mark.parametrize("name", list(encoder_decoder_models()))
def test_beam_one_equals_greedy_for_every_encoder_decoder_kind(name):
    model = encoder_decoder_models()[name]
    src = torch.randn(4, 6) if name.startswith("vector") else sources([5, 9, 3, 7], seed=2)
    greedy = greedy_search(model, src, 1.5, 6)
    beam = beam_search(model, src, beam_size=1, max_len_ratio=1.5, max_len_extra=6)
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam]
    wide = beam_search(model, src, beam_size=4, max_len_ratio=1.5, max_len_extra=6, nbest=4)
    assert all(len(h) == 4 for h in wide)


def test_pruning_to_each_beams_2k_best_changes_nothing(monkeypatch):
    """Each beam proposes only its own 2K best continuations; weighing all K·V candidates instead
    must give the same n-best lists and scores."""
    import importlib

    search_module = importlib.import_module("seqlab.decoding.search")  # the module, not the function

    model = random_transformer(5)
    src = sources([6, 3, 8, 5], seed=5)
    pruned = beam_search(model, src, 4, 1.0, 1.5, 6, nbest=4)
    monkeypatch.setattr(search_module, "candidates_per_beam", lambda beam_size, vocab_size: vocab_size)
    full = beam_search(model, src, 4, 1.0, 1.5, 6, nbest=4)
    assert [[h.tokens for h in hs] for hs in pruned] == [[h.tokens for h in hs] for hs in full]
    for a, b in zip(pruned, full):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("name", [name for name in encoder_decoder_models() if not name.startswith("vector")])
def test_finished_sentences_leave_the_batch(name, beam):
    """Sentences with different length caps finish at different steps and leave the batch (the
    decoder sees fewer rows), and what every sentence gets is what it gets decoded alone."""
    model = encoder_decoder_models()[name]
    lengths = [2, 9, 3, 7, 2, 8, 4, 6]
    src = sources(lengths, seed=4)
    rows_seen = []
    decode_step = model.decode_step

    def counting_step(new_tokens, enc, cache):
        rows_seen.append(new_tokens.size(0))
        return decode_step(new_tokens, enc, cache)

    model.decode_step = counting_step
    together = search(model, src, beam, 1.0, 1.0, 1)
    del model.decode_step
    assert rows_seen[0] == len(lengths)  # the first step: one row per sentence, all its beams alike
    assert rows_seen[1] == len(lengths) * beam
    assert rows_seen[-1] < rows_seen[1] and rows_seen[1:] == sorted(rows_seen[1:], reverse=True)
    alone = [search(model, src[i : i + 1, : n + 1], beam, 1.0, 1.0, 1)[0] for i, n in enumerate(lengths)]
    assert [h[0].tokens for h in together] == [h[0].tokens for h in alone]
    assert [h[0].score for h in together] == pytest.approx([h[0].score for h in alone], abs=1e-5)


def _logits_with_hard_rows(V: int, dtype=torch.float32) -> torch.Tensor:
    """(6, V) random logits; row 0 has its 10 best side by side in one block of 64, row 1 its best
    in the last position (the shorter last block where V is not a multiple of 64)."""
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(V)) * 3
    start = 3 * 64 if V >= 4 * 64 else 0
    logits[0, start : start + 10] = 20 + torch.arange(10.0)
    logits[1, V - 1] = 40
    return logits.to(dtype)


@pytest.mark.parametrize("k", [1, 10])
@pytest.mark.parametrize("V", [20, 1000, 1024])
def test_log_prob_top_k_is_log_softmax_then_top_k(V, k):
    logits = _logits_with_hard_rows(V)
    want_top, want_ids = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
    top, ids = log_prob_top_k(logits, k)
    assert torch.equal(ids, want_ids)
    torch.testing.assert_close(top, want_top)


@pytest.mark.parametrize("k", [1, 10])
def test_log_prob_top_k_of_bf16_logits_in_float32(k):
    """bf16 logits tie more often: the k values must be the k best, whichever of tied ids comes."""
    logits = _logits_with_hard_rows(1000, torch.bfloat16)
    want = torch.log_softmax(logits.float(), dim=-1).topk(k, dim=-1).values
    top, ids = log_prob_top_k(logits, k)
    assert top.dtype == torch.float32
    torch.testing.assert_close(top, want)
    assert torch.equal(logits.gather(1, ids), logits.topk(k, dim=-1).values)


def test_rows_at_their_length_cap_may_only_end():
    logits = _logits_with_hard_rows(1000)
    must_end = torch.tensor([True, False, False, True, False, False])
    top, ids = top_continuations(logits, must_end, 3)
    assert ids[must_end, 0].eq(EOS).all() and top[must_end, 0].eq(0).all()
    assert top[must_end, 1:].eq(float("-inf")).all()
    torch.testing.assert_close(top[~must_end], torch.log_softmax(logits[~must_end], -1).topk(3).values)
