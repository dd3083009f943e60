import json
import random

import numpy as np
import pytest
import torch

from seqlab.config import TransformerConfig
from seqlab.errors import UserError
from seqlab.models import build_model
from seqlab.training.checkpoint import model_state, read_checkpoint, restore_optimizer, restore_rng, save_checkpoint


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = TransformerConfig(d_model=16, n_heads=2, n_encoder_layers=1, n_decoder_layers=1, d_ff=32, **kw)
    return build_model(cfg, 12, 12)


def test_round_trip_model_optimizer_and_rng(tmp_path):
    model = small_model(share_embeddings=True, tie_output=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    model(torch.tensor([[4, 5, 3]]), torch.tensor([[2, 6]])).sum().backward()
    opt.step()
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model, {"step": 7}, opt)
    rng_after_save = torch.rand(3)
    python_after_save, numpy_after_save = random.random(), np.random.rand()

    tensors, meta = read_checkpoint(path)
    assert meta["step"] == 7 and json.loads((tmp_path / "ck.json").read_text())["step"] == 7
    clone = small_model(seed=1, share_embeddings=True, tie_output=True)
    clone.load_state_dict(model_state(tensors, meta))
    for (n, a), (_, b) in zip(model.state_dict().items(), clone.state_dict().items()):
        assert torch.equal(a, b), n
    opt2 = torch.optim.Adam(clone.parameters(), lr=5.0)
    restore_optimizer(opt2, tensors, meta["optimizer"])
    params = list(clone.parameters())
    two_groups = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.0}])
    with pytest.raises(UserError, match=r"ck\.safetensors: its optimizer state has 1 parameter group"):
        restore_optimizer(two_groups, tensors, meta["optimizer"], path)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 1e-3
    for k in s1["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1["state"][k][name], s2["state"][k][name])
    random.random(), np.random.rand()  # move every generator on
    torch.rand(5)
    restore_rng(tensors, meta["rng"])
    assert torch.equal(torch.rand(3), rng_after_save)
    assert random.random() == python_after_save and np.random.rand() == numpy_after_save


def test_no_temporary_files_left(tmp_path):
    save_checkpoint(tmp_path / "a.safetensors", small_model(), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.safetensors"]


def test_truncated_or_foreign_files_are_clear_errors(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, small_model(), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_checkpoint(path)
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="not a readable seqlab checkpoint"):
        read_checkpoint(path)
    with pytest.raises(UserError, match="not found"):
        read_checkpoint(tmp_path / "missing.safetensors")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, small_model(seed=0), {"step": 1})
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("seqlab.training.checkpoint.os.fsync", disk_full)
    with pytest.raises(UserError, match="No space left on device.*previous checkpoint is intact"):
        save_checkpoint(path, small_model(seed=1), {"step": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]
