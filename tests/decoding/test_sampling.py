import torch

from seqlab.config import GPTConfig
from seqlab.data.tokenizer import EOS
from seqlab.decoding.sampling import filter_logits, generate
from seqlab.models import build_model


def lm():
    torch.manual_seed(0)
    return build_model(GPTConfig(kind="gpt", d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0,
                                 max_positions=40), 30, 30).eval()


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[False, True, False, True]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.75)).tolist()
    assert kept == [[True, True, False, False]]  # 0.5 < 0.75 ≤ 0.5 + 0.3
    assert torch.isfinite(filter_logits(probs.log(), top_p=0.4)).tolist() == [[True, False, False, False]]


def test_same_seed_same_text_other_seed_other_text():
    model = lm()
    a = generate(model, [5, 6], max_new_tokens=15, temperature=1.5, seed=1, num_samples=3)
    assert a == generate(model, [5, 6], max_new_tokens=15, temperature=1.5, seed=1, num_samples=3)
    assert a != generate(model, [5, 6], max_new_tokens=15, temperature=1.5, seed=2, num_samples=3)


def test_temperature_zero_is_greedy_and_top_k_one_is_too():
    model = lm()
    greedy = generate(model, [7], max_new_tokens=12, temperature=0)
    assert generate(model, [7], max_new_tokens=12, temperature=1.0, top_k=1, seed=9) == greedy
    steps = torch.tensor([[2, 7]])
    expected = []
    for _ in range(len(greedy[0])):
        nxt = int(model.decode(steps)[0, -1].argmax())
        expected.append(nxt)
        steps = torch.cat([steps, torch.tensor([[nxt]])], dim=1)
    assert greedy[0] == expected[: expected.index(EOS)] if EOS in expected else greedy[0] == expected


def test_generation_stops_at_the_context_length():
    model = lm()
    out = generate(model, [4 + i % 20 for i in range(30)], max_new_tokens=100, temperature=1.0, seed=0)
    assert len(out[0]) <= 40 - 31
