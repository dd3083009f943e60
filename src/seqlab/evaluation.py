"""One evaluation path for every model: teacher-forced perplexity, then decoding and scoring.

Used by validation during training and by ``seqlab evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.config import DecodeConfig
from seqlab.data.batching import Example, collate, make_batches
from seqlab.data.tokenizer import Tokenizer
from seqlab.decoding.search import Hypothesis, search
from seqlab.metrics import TranslationScores, perplexity, score_translations
from seqlab.training.loss import token_cross_entropy


@torch.no_grad()
def corpus_nll(model, examples: list[Example], max_tokens: int, device: torch.device) -> tuple[float, int]:
    """Σ −log p(y_t | y_<t, x) over every reference token (and <eos>), and the token count."""
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64, device=device), 0
    for batch in make_batches(examples, max_tokens, shuffle=False):
        batch = batch.to(device)
        logits = model(batch.src, batch.tgt_in)
        total += token_cross_entropy(logits, batch.tgt_out, label_smoothing=0.0)
        count += batch.n_tgt_tokens
    return float(total), count


@torch.no_grad()
def translate_ids(model, sources: list[list[int]], decode: DecodeConfig, device: torch.device,
                  nbest: int = 1, beam_size: int | None = None) -> list[list[Hypothesis]]:
    """Decode token-id sources in length-sorted batches; results come back in input order."""
    model.eval()
    beam = decode.beam_size if beam_size is None else beam_size
    limit = model.max_positions - 1  # room for <eos>
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[list[Hypothesis]] = [[] for _ in sources]
    for start in range(0, len(order), decode.batch_size):
        idx = order[start : start + decode.batch_size]
        src = collate([Example(i, sources[i][:limit], []) for i in idx]).src.to(device)
        hyps = search(model, src, beam, decode.length_penalty, decode.max_len_ratio, decode.max_len_extra, nbest)
        for i, h in zip(idx, hyps):
            results[i] = h
    return results


def translate_lines(model, src_tok: Tokenizer, tgt_tok: Tokenizer, lines: list[str], decode: DecodeConfig,
                    device: torch.device, nbest: int = 1, beam_size: int | None = None) -> list[list[tuple[str, float]]]:
    """Plain text in, detokenized n-best lists (text, score) out, one list per input line."""
    hyps = translate_ids(model, src_tok.encode_batch(lines), decode, device, nbest, beam_size)
    return [[(tgt_tok.decode(h.tokens), h.score) for h in hs] for hs in hyps]


@dataclass
class EvaluationResult:
    ppl: float
    nll_per_token: float
    n_tokens: int
    scores: TranslationScores
    hypotheses: list[str]


def evaluate(model, src_tok: Tokenizer, tgt_tok: Tokenizer, src_lines: list[str], ref_lines: list[str],
             decode: DecodeConfig, device: torch.device, max_tokens: int = 4096,
             beam_size: int | None = None) -> EvaluationResult:
    """PPL of the references under teacher forcing, then BLEU/chrF of the decoded hypotheses."""
    limit = model.max_positions - 1
    examples = [Example(i, s[:limit], t[: limit - 1]) for i, (s, t) in
                enumerate(zip(src_tok.encode_batch(src_lines), tgt_tok.encode_batch(ref_lines)))]
    nll, n = corpus_nll(model, examples, max_tokens, device)
    hyps = [h[0][0] if h else "" for h in translate_lines(model, src_tok, tgt_tok, src_lines, decode, device,
                                                           beam_size=beam_size)]
    return EvaluationResult(perplexity(nll, n), nll / max(n, 1), n, score_translations(hyps, ref_lines), hyps)

