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


# One tiny configuration per model kind, each on its built-in data set.
TINY_MODELS = {
    "transformer": {"kind": "transformer", "d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
                    "d_ff": 64, "dropout": 0.0, "max_positions": 64},
    "rnn_seq2seq": {"kind": "rnn_seq2seq", "cell": "gru", "attention": "additive", "embed_dim": 16, "hidden_size": 32,
                    "bidirectional": True},
    "gpt": {"kind": "gpt", "d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "dropout": 0.0, "max_positions": 64},
    "rnn_lm": {"kind": "rnn_lm", "cell": "lstm", "embed_dim": 16, "hidden_size": 32},
    "classifier": {"kind": "classifier", "encoder": "lstm", "embed_dim": 16, "hidden_size": 32},
    "vector_to_seq": {"kind": "vector_to_seq", "input_dim": 40, "cell": "gru", "embed_dim": 16, "hidden_size": 32},
}
TASK_DATA = {"transformer": "reverse", "rnn_seq2seq": "reverse", "gpt": "lm", "rnn_lm": "lm", "classifier": "sentiment",
             "vector_to_seq": "spell"}


@pytest.fixture(scope="session")
def task_data(tmp_path_factory) -> dict[str, Path]:
    """Every built-in task, small: {task: directory}."""
    root = tmp_path_factory.mktemp("tasks")
    dirs = {}
    for task in ("reverse", "lm", "sentiment", "spell"):
        dirs[task] = root / task
        write_synthetic(task, dirs[task], vocab_size=8, min_len=3, max_len=6, train_size=200, dev_size=20,
                        test_size=20, seed=3)
    return dirs


def kind_config_tree(kind: str, task_data: dict[str, Path], run_dir: Path, **train) -> dict:
    data = task_data[TASK_DATA[kind]]
    if kind in ("gpt", "rnn_lm"):
        splits = {s: {"text": str(data / f"{s}.txt")} for s in ("train", "dev")}
    elif kind == "classifier":
        splits = {s: {"text": str(data / f"{s}.tsv")} for s in ("train", "dev")}
    else:
        splits = {s: {"src": str(data / f"{s}.src"), "tgt": str(data / f"{s}.tgt")} for s in ("train", "dev")}
    return {
        "run_dir": str(run_dir),
        "data": {**splits, "max_len": 32},
        "tokenizer": {"type": "word", "vocab_size": 64},
        "model": dict(TINY_MODELS[kind]),
        "train": {"max_tokens": 256, "max_steps": 6, "valid_every": 3, "lr": 0.003, "warmup_steps": 2,
                  "log_every": 3, "threads": 2, "device": "cpu", **train},
        "decode": {"beam_size": 2, "batch_size": 16, "max_len_extra": 8},
    }
