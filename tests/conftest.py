from pathlib import Path

import pytest
import torch

from seqlab.config import parse_config
from seqlab.data.synth import write_synthetic


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture
def reverse_data(tmp_path: Path) -> Path:
    """A tiny reverse task: 300 training pairs of 3–6 symbols over 8 symbols."""
    out = tmp_path / "data"
    write_synthetic("reverse", out, vocab_size=8, min_len=3, max_len=6, train_size=300, dev_size=20, test_size=20, seed=3)
    return out


def tiny_config_tree(data: Path, run_dir: Path, **train) -> dict:
    return {
        "run_dir": str(run_dir),
        "data": {
            "train": {"src": str(data / "train.src"), "tgt": str(data / "train.tgt")},
            "dev": {"src": str(data / "dev.src"), "tgt": str(data / "dev.tgt")},
            "max_len": 32,
        },
        "tokenizer": {"type": "word", "vocab_size": 32},
        "model": {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1, "d_ff": 64,
                  "dropout": 0.1, "max_positions": 64},
        "train": {"max_tokens": 256, "max_steps": 12, "valid_every": 6, "lr": 0.003, "warmup_steps": 5,
                  "log_every": 3, "threads": 2, "device": "cpu", **train},
        "decode": {"beam_size": 2, "batch_size": 16},
    }


@pytest.fixture
def tiny_config(reverse_data: Path, tmp_path: Path):
    return parse_config(tiny_config_tree(reverse_data, tmp_path / "run"))
