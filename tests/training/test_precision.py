"""Mixed precision: bf16 training follows the fp32 loss curve; bf16 and int8 inference translate
like fp32. GPU-only paths (fp16 with a gradient scaler) are skipped without CUDA."""

import json

import pytest
import torch

import seqlab.decoding.packed as packed
from seqlab.config import MODEL_CONFIGS, DecodeConfig, parse_config
from seqlab.decoding.packed import Int8Linear
from seqlab.decoding.search import greedy_search
from seqlab.errors import UserError
from seqlab.models import build_model
from seqlab.evaluation import translate_lines
from seqlab.runs import for_inference, load_model
from seqlab.training.trainer import train
from tests.conftest import TINY_MODELS, tiny_config_tree
from tests.decoding.test_search import sources


def train_losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["train_loss"] for r in map(json.loads, lines) if "train_loss" in r]


def test_bf16_loss_curve_agrees_with_fp32(reverse_data, tmp_path):
    curves = {}
    for precision in ("fp32", "bf16"):
        tree = tiny_config_tree(reverse_data, tmp_path / precision, max_steps=60, valid_every=60, log_every=10,
                                precision=precision)
        tree["model"]["dropout"] = 0.0
        train(parse_config(tree), progress=False)
        curves[precision] = train_losses(tmp_path / precision)
    assert len(curves["fp32"]) == len(curves["bf16"]) == 6
    assert curves["fp32"][-1] < 0.8 * curves["fp32"][0]  # it learned
    for a, b in zip(curves["fp32"], curves["bf16"]):
        assert abs(a - b) < 0.05 * a, (curves["fp32"], curves["bf16"])
    tensors = load_model(tmp_path / "bf16").model.state_dict()
    assert all(t.dtype == torch.float32 for t in tensors.values())  # master weights stay fp32


def test_reduced_precision_inference_translates_like_fp32(reverse_data, tmp_path):
    cfg = parse_config(tiny_config_tree(reverse_data, tmp_path / "run", max_steps=150, valid_every=150))
    train(cfg, progress=False)
    m = load_model(cfg.run_dir)
    lines = (reverse_data / "test.src").read_text().splitlines()
    decode = DecodeConfig(beam_size=2, batch_size=8)
    fp32 = translate_lines(m.model, m.codec, lines, decode, torch.device("cpu"))
    for precision in ("bf16", "int8"):
        out = translate_lines(for_inference(m.model, precision), m.codec, lines, decode, torch.device("cpu"),
                              precision=precision)
        same = sum(a[0][0] == b[0][0] for a, b in zip(fp32, out))
        assert same >= 0.8 * len(lines), (precision, same)
    quantized = for_inference(m.model, "int8")
    assert not any(isinstance(mod, torch.nn.Linear) for mod in quantized.modules())  # every product in int8
    assert is_int8(quantized.output_proj)  # the tied output layer too
    assert m.model.output_proj is None  # ... while the model passed in stays tied
    assert {p.dtype for p in for_inference(m.model, "bf16").parameters()} == {torch.bfloat16}  # cast once
    assert {p.dtype for p in m.model.parameters()} == {torch.float32}  # the model passed in is untouched


def is_int8(layer) -> bool:
    return isinstance(layer, Int8Linear) or "quantized" in type(layer).__module__


def test_int8_without_onednn_int8_kernels_uses_torch_dynamic_quantization(monkeypatch):
    """Where the CPU lacks int8 dot products (or torch its oneDNN int8 linear), int8 falls back
    to torch's dynamic quantization, around a float32 model, and still decodes like it."""
    monkeypatch.setattr(packed, "can_quantize", lambda model: False)
    torch.manual_seed(0)
    model = build_model(MODEL_CONFIGS["transformer"](**TINY_MODELS["transformer"]), 20, 20).eval()
    quantized = for_inference(model, "int8")
    assert all("quantized" in type(mod).__module__ for mod in quantized.modules() if is_int8(mod))
    assert is_int8(quantized.output_proj) and not any(isinstance(mod, Int8Linear) for mod in quantized.modules())
    assert {p.dtype for p in quantized.parameters()} == {torch.float32}
    src = sources([5, 9, 3, 7], seed=1)
    want, got = greedy_search(model, src), greedy_search(quantized, src)
    assert sum(a[0].tokens == b[0].tokens for a, b in zip(want, got)) >= 3


def test_fp16_needs_cuda(reverse_data, tmp_path):
    with pytest.raises(UserError, match="train.precision fp16 needs CUDA"):
        parse_config(tiny_config_tree(reverse_data, tmp_path / "r", precision="fp16", device="cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_trains(reverse_data, tmp_path, precision):
    tree = tiny_config_tree(reverse_data, tmp_path / precision, max_steps=30, valid_every=30, log_every=10,
                            precision=precision, device="cuda")
    result = train(parse_config(tree), progress=False)
    losses = train_losses(tmp_path / precision)
    assert result.state.step == 30 and losses[-1] < losses[0]
