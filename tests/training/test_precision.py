"""Mixed precision: bf16 training follows the fp32 loss curve; bf16 and int8 inference translate
like fp32. fp16 training with a gradient scaler is a CUDA path, whose bookkeeping is tested on the
CPU's float16 autocast; the CUDA runs themselves are skipped without a GPU."""

import functools
import json
import math
import re

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


def fp16_on_cpu(tree: dict):
    """The config of ``tree`` with precision fp16 on the CPU, which validation refuses (fp16 needs
    CUDA): the CPU's float16 autocast and a CPU gradient scaler stand in for CUDA's."""
    cfg = parse_config({**tree, "train": {**tree["train"], "precision": "fp32"}})
    cfg.train.__dict__["precision"] = "fp16"  # past validate_assignment
    return cfg


def test_fp16_overflowing_updates_are_skipped_and_logged(reverse_data, tmp_path, monkeypatch):
    # At a loss scale of 2^40 the float16 gradients overflow: the scaler skips those updates and
    # halves its scale until they fit. The loss of a skipped update is finite and still logged.
    monkeypatch.setattr(torch.amp, "GradScaler", functools.partial(torch.amp.GradScaler, init_scale=2.0**40))
    cfg = fp16_on_cpu(tiny_config_tree(reverse_data, tmp_path / "r", max_steps=40, valid_every=40, log_every=10))
    result = train(cfg, progress=False)
    log = (tmp_path / "r" / "train.log").read_text()
    skips = re.findall(r"steps \d+–\d+: (\d+) update\(s\) skipped, fp16 gradients overflowed; loss scale now (\S+)",
                       log)
    assert skips, log
    skipped = sum(int(n) for n, _ in skips)
    assert 5 <= skipped < 40 and float(skips[-1][1]) == 2.0 ** (40 - skipped)
    losses = train_losses(tmp_path / "r")
    assert result.state.step == 40 and len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]


def test_fp16_stops_when_the_loss_scale_runs_out(reverse_data, tmp_path):
    # lr 10^5 blows the weights up at the first update; from then on every float16 forward overflows,
    # every update is skipped, and the scale halves from 65,536 below 10^-4 in 30 updates: found at
    # the next log, step 33.
    cfg = fp16_on_cpu(tiny_config_tree(reverse_data, tmp_path / "r", max_steps=80, valid_every=80, lr=1e5))
    with pytest.raises(UserError, match=r"training stopped at step 33: fp16 gradients overflow at every loss scale "
                                        r"down to 0\.0001 .* last good checkpoint: none yet\. Lower train\.lr"):
        train(cfg, progress=False)
    assert not (tmp_path / "r" / "checkpoint_last.safetensors").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_trains(reverse_data, tmp_path, precision):
    tree = tiny_config_tree(reverse_data, tmp_path / precision, max_steps=30, valid_every=30, log_every=10,
                            precision=precision, device="cuda")
    result = train(parse_config(tree), progress=False)
    losses = train_losses(tmp_path / precision)
    assert result.state.step == 30 and losses[-1] < losses[0]
