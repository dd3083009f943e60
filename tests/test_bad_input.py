"""Each bad input gets a one-line error naming the file, line or key and what to do, a non-zero
exit, no traceback, and leaves existing checkpoints and outputs untouched."""

import errno
from pathlib import Path

import pytest
import torch

from seqlab.config import parse_config
from seqlab.errors import UserError
from seqlab.runs import BEST, LAST
from seqlab.training.checkpoint import read_checkpoint
from seqlab.training.trainer import train
from tests.conftest import tiny_config_tree
from tests.test_cli import assert_one_line_error, run_cli, write_config


@pytest.fixture
def trained_run(reverse_data, tmp_path):
    run = tmp_path / "run"
    train(parse_config(tiny_config_tree(reverse_data, run, max_steps=6, valid_every=3)), progress=False)
    return run


def snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_directory_instead_of_a_file(reverse_data, tmp_path, capsys):
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    tree["data"]["train"]["src"] = str(reverse_data)
    code, _, err = run_cli(["train", str(write_config(tmp_path, tree))], capsys)
    assert_one_line_error(code, err, f"{reverse_data}: is a directory; give the path of a text file")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("section, key, value, needle", [
    ("data", "max_len", 0, "key 'data.max_len': Input should be greater than 0"),
    ("decode", "max_len_extra", -1, "key 'decode.max_len_extra'"),
    ("train", "max_steps", 0, "key 'train.max_steps'"),
    ("train", "keep_last", 0, "key 'train.keep_last'"),
    ("train", "update_freq", -2, "key 'train.update_freq'"),
])
def test_sizes_below_one(reverse_data, tmp_path, capsys, section, key, value, needle):
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    tree[section][key] = value
    code, _, err = run_cli(["train", str(write_config(tmp_path, tree))], capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_beam_and_lengths_on_the_command_line(trained_run, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["translate", "--ckpt", str(trained_run), "--beam", "0"], capsys, stdin="a b\n",
                           monkeypatch=monkeypatch)
    assert_one_line_error(code, err, "--beam: Input should be greater than 0")
    code, _, err = run_cli(["data", "synth", "--task", "copy", "--out", str(tmp_path / "d"), "--max-len", "0"], capsys)
    assert_one_line_error(code, err, "--max-len must be at least 1")
    assert not (tmp_path / "d").exists()


def test_output_directory_not_writable(reverse_data, trained_run, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    tree = tiny_config_tree(reverse_data, blocker / "run")
    code, _, err = run_cli(["train", str(write_config(tmp_path, tree))], capsys)
    assert_one_line_error(code, err, "is not a writable directory; choose another run_dir")
    assert blocker.read_text() == "not a directory"
    code, _, err = run_cli(["translate", "--ckpt", str(trained_run), "-o", str(tmp_path / "missing" / "hyp.txt")],
                           capsys, stdin="a b\n", monkeypatch=monkeypatch)
    assert_one_line_error(code, err, "does not exist")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(reverse_data, trained_run, monkeypatch):
    import seqlab.training.checkpoint as checkpoint

    before = snapshot(trained_run)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    tree = tiny_config_tree(reverse_data, trained_run, max_steps=9, valid_every=3)
    with pytest.raises(UserError) as err:
        train(parse_config(tree), resume=True, progress=False)
    assert "cannot write checkpoint (No space left on device)" in str(err.value)
    assert "The previous checkpoint is intact" in str(err.value) and "\n" not in str(err.value)
    after = snapshot(trained_run)
    for name in (LAST, BEST, "checkpoint_last.json"):
        assert after[Path(name)] == before[Path(name)], name
    assert not [p for p in trained_run.iterdir() if p.name.endswith(".tmp")]
    _, meta = read_checkpoint(trained_run / LAST)
    assert meta["state"]["step"] == 6


def test_a_checkpoint_of_another_configuration_names_the_field(reverse_data, trained_run, capsys):
    tree = tiny_config_tree(reverse_data, trained_run)
    tree["model"]["n_heads"] = 4
    before = snapshot(trained_run)
    with pytest.raises(UserError, match="config key model.n_heads is 4 but the checkpoint .* was trained with 2"):
        train(parse_config(tree), resume=True, progress=False)
    assert snapshot(trained_run) == before


def test_average_of_the_last_checkpoints(reverse_data, tmp_path, capsys):
    run = tmp_path / "run"
    train(parse_config(tiny_config_tree(reverse_data, run, max_steps=9, valid_every=9, save_every=3, keep_last=3)),
          progress=False)
    code, out, err = run_cli(["average", "--ckpt", str(run), "--last", "2", "--out", str(run / "avg.safetensors")],
                             capsys)
    assert code == 0, err
    a, _ = read_checkpoint(run / "checkpoint_00000006.safetensors")
    b, _ = read_checkpoint(run / "checkpoint_00000009.safetensors")
    avg, meta = read_checkpoint(run / "avg.safetensors")
    name = "model.encoder_layers.0.ffn.linear1.weight"
    torch.testing.assert_close(avg[name], (a[name] + b[name]) / 2)
    assert meta["averaged"][-1].endswith("checkpoint_00000009.safetensors")
    code, out, _ = run_cli(["evaluate", "--ckpt", str(run / "avg.safetensors"), "--src",
                            str(reverse_data / "test.src"), "--ref", str(reverse_data / "test.tgt")], capsys)
    assert code == 0 and "BLEU" in out
    code, _, err = run_cli(["average", "--ckpt", str(run), "--last", "5", "--out", str(run / "x.safetensors")], capsys)
    assert_one_line_error(code, err, "3 step checkpoints, fewer than --last 5")
    assert not (run / "x.safetensors").exists()


def test_truncated_checkpoint_is_a_clear_error(trained_run, capsys, monkeypatch):
    data = (trained_run / BEST).read_bytes()
    (trained_run / BEST).write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(["translate", "--ckpt", str(trained_run)], capsys, stdin="a b\n", monkeypatch=monkeypatch)
    assert_one_line_error(code, err, "not a readable seqlab checkpoint", "truncated or corrupt")


def test_evaluate_precision_list_errors(trained_run, reverse_data, tmp_path, capsys):
    args = ["evaluate", "--ckpt", str(trained_run), "--src", str(reverse_data / "test.src"),
            "--ref", str(reverse_data / "test.tgt")]
    code, _, err = run_cli([*args, "--precision", "fp32,fp8"], capsys)
    assert_one_line_error(code, err, "--precision 'fp8': choose fp32, bf16 or int8")
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("kept\n")
    code, _, err = run_cli([*args, "--precision", "bf16,int8", "--hyp", str(hyp)], capsys)
    assert_one_line_error(code, err, "--hyp writes the outputs of one precision", "give a single --precision")
    assert hyp.read_text() == "kept\n"  # nothing overwritten
