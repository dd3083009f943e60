"""The evaluation path's comparison of precisions (the scores themselves: tests/test_runs.py, tests/test_cli.py)."""

from seqlab.evaluation import EvaluationResult, precision_table
from seqlab.metrics import score_translations


def test_precision_table_puts_each_mode_beside_the_first():
    refs = ["a b c d", "e f g h"]
    results = {"fp32": EvaluationResult(0.2, 10, ppl=1.22, scores=score_translations(refs, refs), seconds=2.0),
               "int8": EvaluationResult(0.3, 10, ppl=1.35, scores=score_translations(["a b c d", "e f g x"], refs),
                                        seconds=0.5)}
    header, fp32, int8 = precision_table(results, n_inputs=2).splitlines()
    assert header.split() == ["precision", "BLEU", "vs", "fp32", "chrF", "exact", "PPL", "decoding", "sent/s"]
    assert fp32.split()[:2] == ["fp32", "100.00"] and fp32.split()[-1] == "1"  # 2 sentences in 2 s
    bleu = results["int8"].scores.bleu
    assert int8.split()[:3] == ["int8", f"{bleu:.2f}", f"{bleu - 100:+.2f}"]
    assert "50.00%" in int8 and "1.350" in int8 and int8.split()[-1] == "4"


def test_precision_table_for_language_models_and_classifiers():
    lm = precision_table({"fp32": EvaluationResult(0.5, 1000, ppl=1.6487, seconds=0.5),
                          "bf16": EvaluationResult(0.51, 1000, ppl=1.6653, seconds=0.25)}, n_inputs=10)
    header, _, bf16 = lm.splitlines()
    assert header.split()[:2] == ["precision", "PPL"] and bf16.split()[:3] == ["bf16", "1.665", "+0.017"]
    assert bf16.split()[-1] == "4,000"  # target tokens per second
    classes = precision_table({"fp32": EvaluationResult(0.4, 8, accuracy=75.0, seconds=1.0),
                               "int8": EvaluationResult(0.45, 8, accuracy=62.5, seconds=1.0)}, n_inputs=8)
    assert classes.splitlines()[2].split()[:3] == ["int8", "62.50", "-12.50"]
