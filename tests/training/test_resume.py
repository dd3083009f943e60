"""Crashes and resume: a run killed at an arbitrary step and resumed ends bitwise identical to an
uninterrupted one; SIGTERM/SIGINT checkpoint and exit cleanly; non-finite losses are skipped."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from seqlab.config import parse_config
from seqlab.errors import UserError
from seqlab.runs import LAST
from seqlab.training.checkpoint import read_checkpoint
from seqlab.training.trainer import train
from tests.conftest import tiny_config_tree


def long_tree(reverse_data, run_dir, **train_options):
    options = dict(max_steps=400, valid_every=200, save_every=10, log_every=50) | train_options
    return tiny_config_tree(reverse_data, run_dir, **options)


def weights(run_dir):
    tensors, meta = read_checkpoint(run_dir / LAST)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}, meta["state"]["step"]


def start(config_path, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "seqlab", "train", str(config_path), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_checkpoint(proc, run_dir, timeout=60):
    deadline = time.monotonic() + timeout
    while not (run_dir / LAST).exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(reverse_data, tmp_path):
    straight = tmp_path / "straight"
    train(parse_config(long_tree(reverse_data, straight)), progress=False)

    killed = tmp_path / "killed"
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(long_tree(reverse_data, killed)))
    proc = start(config)
    wait_for_checkpoint(proc, killed)
    time.sleep(random.Random().uniform(0.0, 0.5))  # an arbitrary moment: mid-step, mid-save, anywhere
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, killed_at = weights(killed)
    assert killed_at < 400
    resumed = start(config, "--resume")
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read()

    a, step_a = weights(straight)
    b, step_b = weights(killed)
    assert step_a == step_b == 400
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


@pytest.mark.parametrize("sig, name", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")])
def test_signal_writes_a_checkpoint_and_says_how_to_resume(reverse_data, tmp_path, sig, name):
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(long_tree(reverse_data, run, save_every=1000)))
    proc = start(config)
    deadline = time.monotonic() + 60
    while not (run / "metrics.jsonl").exists():  # training has begun (first log line after 50 steps)
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    code = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert code == 128 + sig, err
    assert f"stopped by {name} at step" in err and "--resume" in err and "Traceback" not in err
    step = int(err.split("at step ")[1].split(";")[0])
    _, saved = weights(run)
    assert saved == step  # the checkpoint holds exactly the step the message names


def test_non_finite_losses_are_skipped_then_stop_training(reverse_data, tmp_path, monkeypatch):
    import seqlab.training.trainer as trainer

    real = trainer.batch_loss
    calls = {"n": 0}

    def sometimes_nan(model, batch, label_smoothing=0.0):
        calls["n"] += 1
        loss = real(model, batch, label_smoothing)
        return loss * float("nan") if calls["n"] == 3 or calls["n"] >= 8 else loss

    monkeypatch.setattr(trainer, "batch_loss", sometimes_nan)
    cfg = parse_config(tiny_config_tree(reverse_data, tmp_path / "run", max_steps=50, valid_every=5, max_bad_steps=3))
    with pytest.raises(UserError) as err:
        train(cfg, progress=False)
    # The host learns of skipped updates when it logs (every 3 steps) or checkpoints (every 5): the
    # third in a row, at step 10, is found by the checkpoint, which stops before saving.
    message = str(err.value)
    assert "training stopped at step 10: 3 non-finite losses or gradients in a row" in message
    assert "last good checkpoint" in message and "checkpoint_last.safetensors" in message
    log = (tmp_path / "run" / "train.log").read_text()
    assert "steps 1–3: 1 update(s) skipped for a non-finite loss or gradient (1 in a row at step 3)" in log
    assert "steps 7–9: 2 update(s) skipped for a non-finite loss or gradient (2 in a row at step 9)" in log
    _, step = weights(tmp_path / "run")
    assert step == 5  # the last checkpoint; the update skipped at step 3 still counts as a step
    assert all(r.get("train_loss") is not None for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl")
                                                               .read_text().splitlines()) if "train_loss" in r)
    tensors, _ = read_checkpoint(tmp_path / "run" / LAST)
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))


def test_keep_last_k_step_checkpoints(reverse_data, tmp_path):
    cfg = parse_config(tiny_config_tree(reverse_data, tmp_path / "run", max_steps=12, valid_every=6, save_every=3,
                                        keep_last=2))
    train(cfg, progress=False)
    run = tmp_path / "run"
    kept = sorted(p.name for p in run.glob("checkpoint_0*.safetensors"))
    assert kept == ["checkpoint_00000009.safetensors", "checkpoint_00000012.safetensors"]
    assert os.path.samefile(run / LAST, run / kept[-1])  # the last checkpoint is a second name, not a copy
    assert (run / "checkpoint_best.safetensors").exists()
