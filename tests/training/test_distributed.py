"""Two processes under torchrun (gloo, CPU) train exactly what one process does with the same global batch."""

import json
import subprocess
import sys

import torch
import yaml

from seqlab.config import parse_config
from seqlab.runs import LAST
from seqlab.training.checkpoint import read_checkpoint
from seqlab.training.trainer import train
from tests.conftest import tiny_config_tree


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train_loss"] for r in map(json.loads, lines) if "train_loss" in r}


def test_two_processes_equal_one_process_with_the_same_global_batch(reverse_data, tmp_path):
    def tree(run_dir, update_freq):
        t = tiny_config_tree(reverse_data, run_dir, max_tokens=64, max_steps=16, valid_every=8, log_every=2,
                             threads=1, update_freq=update_freq)
        t["model"]["dropout"] = 0.0  # dropout masks come from each process's own generator
        return t

    one = tmp_path / "one"
    train(parse_config(tree(one, update_freq=2)), progress=False)  # 1 process, 2 batches per update

    two = tmp_path / "two"
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(tree(two, update_freq=1)))  # 2 processes, 1 batch each per update
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             "-m", "seqlab", "train", str(config), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == list(range(2, 17, 2))
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    wa, _ = read_checkpoint(one / LAST)
    wb, meta = read_checkpoint(two / LAST)
    assert meta["state"]["step"] == 16
    for name in (k for k in wa if k.startswith("model.")):
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=1e-4)
    assert "rng.torch.1" in wb  # each process's generator is saved, so each resumes with its own
    log = (two / "train.log").read_text()
    assert "2 processes" in log
