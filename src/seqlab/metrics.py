"""Evaluation metrics (lecture §02.2): perplexity, BLEU and chrF.

* Perplexity, "how confused the model is": PPL = exp(CE), the exponential of the mean
  per-token cross-entropy −(1/N) Σ_t log p(y_t | y_<t, x) of the reference under the model.
* BLEU (Papineni et al. 2002): the geometric mean of modified n-gram precisions p_1 … p_4,
  times a brevity penalty BP = min(1, exp(1 − r/c)); n-grams rather than single words so that
  word order counts too. Computed by sacrebleu on detokenized text, with its signature, so
  figures are comparable across papers and toolkits.
* chrF (Popović 2015): the character n-gram F-score, also from sacrebleu.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """PPL = exp(Σ −log p / N); ``inf`` for a model that puts zero mass on a reference token."""
    mean = nll_sum / max(n_tokens, 1)
    return math.exp(mean) if mean < 700 else float("inf")


@dataclass
class TranslationScores:
    bleu: float
    precisions: list[float]  # modified 1- to 4-gram precisions, in %
    brevity_penalty: float
    sys_len: int
    ref_len: int
    chrf: float
    exact_match: float  # % of hypotheses identical to their reference
    bleu_signature: str
    chrf_signature: str

    def bleu_line(self) -> str:
        p = "/".join(f"{x:.1f}" for x in self.precisions)
        return (f"BLEU = {self.bleu:.2f}  (n-gram precisions {p}, BP = {self.brevity_penalty:.3f}, "
                f"hyp/ref length = {self.sys_len}/{self.ref_len})")

    def as_dict(self) -> dict:
        return dict(vars(self))


def score_translations(hypotheses: list[str], references: list[str]) -> TranslationScores:
    """BLEU and chrF of detokenized hypotheses against one reference each, plus exact match."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
    return TranslationScores(
        bleu=b.score, precisions=list(b.precisions), brevity_penalty=b.bp, sys_len=b.sys_len, ref_len=b.ref_len,
        chrf=c.score, exact_match=100.0 * exact / max(len(references), 1),
        bleu_signature=str(bleu.get_signature()), chrf_signature=str(chrf.get_signature()),
    )
