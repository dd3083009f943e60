"""The command line: the main job end to end, and one test per bad input (message + nothing written)."""

import json
import shutil

import pytest
import yaml

from seqlab.cli import main
from seqlab.models import attention
from tests.conftest import tiny_config_tree


def run_cli(args, capsys, stdin=None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


def write_config(tmp_path, tree):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("seqlab: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in err


def test_train_translate_evaluate_end_to_end(reverse_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    config = write_config(tmp_path, tiny_config_tree(reverse_data, run))
    code, _, err = run_cli(["train", str(config), "--quiet", "--set", "train.max_steps=8"], capsys)
    assert code == 0, err
    assert "run saved in" in err

    code, out, err = run_cli(["translate", "--ckpt", str(run), "--beam", "2"], capsys, stdin="a b c\nd e\n",
                             monkeypatch=monkeypatch)
    assert code == 0, err
    assert len(out.splitlines()) == 2

    # --compile reaches the decoding copy: its bf16 attention steps run the compiled kernel
    monkeypatch.setattr(attention, "_compiled_attention", None)
    code, out, err = run_cli(["translate", "--ckpt", str(run), "--beam", "2", "--precision", "bf16", "--compile",
                              "--device", "cpu"], capsys, stdin="a b c\nd e\n", monkeypatch=monkeypatch)
    assert code == 0, err
    assert len(out.splitlines()) == 2
    assert callable(attention._compiled_attention) or not any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    code, out, err = run_cli(["translate", "--ckpt", str(run), "--compile", "--device", "cpu"], capsys,
                             stdin="a b c\n", monkeypatch=monkeypatch)
    assert code == 0 and len(out.splitlines()) == 1
    assert "seqlab: warning: --compile speeds up bf16 and int8 decoding on the CPU only; fp32 on cpu" in err

    code, out, _ = run_cli(["translate", "--ckpt", str(run), "--beam", "3", "--nbest", "2", "-i",
                            str(reverse_data / "test.src"), "-o", str(tmp_path / "hyp.txt")], capsys)
    assert code == 0
    nbest = (tmp_path / "hyp.txt").read_text().splitlines()
    assert len(nbest) == 40 and nbest[0].startswith("0 ||| ") and nbest[1].startswith("0 ||| ")

    code, out, _ = run_cli(["evaluate", "--ckpt", str(run), "--src", str(reverse_data / "test.src"),
                            "--ref", str(reverse_data / "test.tgt"), "--json", str(tmp_path / "s.json")], capsys)
    assert code == 0
    for needle in ("PPL", "BLEU", "n-gram precisions", "BP", "chrF", "nrefs:1|case:mixed", "src:", "hyp:"):
        assert needle in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["ppl"] > 1 and len(scores["precisions"]) == 4 and 0 <= scores["bleu"] <= 100

    # every reduced-precision mode scored beside fp32 (added first, as the reference)
    code, out, _ = run_cli(["evaluate", "--ckpt", str(run), "--src", str(reverse_data / "test.src"),
                            "--ref", str(reverse_data / "test.tgt"), "--precision", "int8,bf16", "--device", "cpu",
                            "--json", str(tmp_path / "p.json")], capsys)
    assert code == 0
    table = out[out.index("precision "):].splitlines()
    assert table[0].split()[:3] == ["precision", "BLEU", "vs"] and [r.split()[0] for r in table[1:4]] == \
        ["fp32", "int8", "bf16"]
    by_precision = json.loads((tmp_path / "p.json").read_text())["by_precision"]
    assert list(by_precision) == ["fp32", "int8", "bf16"]
    assert by_precision["fp32"]["bleu"] == pytest.approx(scores["bleu"])  # the same fp32 decoding as above
    for mode, row in zip(["int8", "bf16"], table[2:4]):
        difference = float(row.split()[2])
        assert difference == pytest.approx(by_precision[mode]["bleu"] - by_precision["fp32"]["bleu"], abs=0.006)


def test_info_prints_the_paper_base_parameter_count(capsys):
    from tests.models.test_transformer import expected_parameter_count

    code, out, _ = run_cli(["info", "configs/transformer_base.yaml"], capsys)
    assert code == 0
    assert f"{expected_parameter_count(512, 6, 6, 2048, 37000):,} parameters" in out


def test_unequal_line_counts(reverse_data, tmp_path, capsys):
    (reverse_data / "train.tgt").write_text("\n".join((reverse_data / "train.tgt").read_text().splitlines()[:-1]) + "\n")
    config = write_config(tmp_path, tiny_config_tree(reverse_data, tmp_path / "run"))
    code, _, err = run_cli(["train", str(config)], capsys)
    assert_one_line_error(code, err, "train.src has 300 lines", "train.tgt has 299", "line 300")
    assert not (tmp_path / "run").exists()


def test_invalid_utf8(reverse_data, tmp_path, capsys):
    with open(reverse_data / "train.src", "ab") as f:
        f.write(b"caf\xe9\n")
    with open(reverse_data / "train.tgt", "a") as f:
        f.write("x\n")
    config = write_config(tmp_path, tiny_config_tree(reverse_data, tmp_path / "run"))
    code, _, err = run_cli(["train", str(config)], capsys)
    assert_one_line_error(code, err, "train.src:301: invalid UTF-8", "iconv")
    assert not (tmp_path / "run").exists()


def test_empty_pairs_and_long_pairs_are_counted(reverse_data, tmp_path, capsys):
    src, tgt = reverse_data / "train.src", reverse_data / "train.tgt"
    src.write_text(src.read_text() + "\n" + " ".join("a" * 40) + "\n")
    tgt.write_text(tgt.read_text() + "b\n" + " ".join("a" * 40) + "\n")
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    tree["train"]["max_steps"] = 1
    config = write_config(tmp_path, tree)
    code, _, err = run_cli(["train", str(config)], capsys)
    assert code == 0, err
    assert "300 pairs; skipped 1 with an empty side (first at line 301); dropped 1 over the length limit (first at line 302)" in err


@pytest.mark.parametrize("change, needles", [
    ({"model": {"n_layers": 2}}, ["unknown key 'model.n_layers'"]),
    ({"train": {"lr": "fast"}}, ["key 'train.lr'", "'fast'"]),
    ({"train": {"max_tokens": -5}}, ["key 'train.max_tokens'", "greater than 0"]),
    ({"model": {"d_model": 30, "n_heads": 4}}, ["model.d_model (30) must be divisible by model.n_heads (4)"]),
    ({"decode": {"beam_size": 0}}, ["key 'decode.beam_size'"]),
])
def test_bad_config_values(reverse_data, tmp_path, capsys, change, needles):
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    for section, values in change.items():
        tree[section].update(values)
    code, _, err = run_cli(["train", str(write_config(tmp_path, tree))], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "run").exists()


def test_bad_set_override(reverse_data, tmp_path, capsys):
    config = write_config(tmp_path, tiny_config_tree(reverse_data, tmp_path / "run"))
    code, _, err = run_cli(["train", str(config), "--set", "train.max_stpes=3"], capsys)
    assert_one_line_error(code, err, "unknown key 'train.max_stpes'")


def test_missing_files(reverse_data, tmp_path, capsys):
    code, _, err = run_cli(["train", str(tmp_path / "nope.yaml")], capsys)
    assert_one_line_error(code, err, "nope.yaml: config file not found")
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    tree["data"]["train"]["src"] = str(tmp_path / "missing.src")
    code, _, err = run_cli(["train", str(write_config(tmp_path, tree))], capsys)
    assert_one_line_error(code, err, "missing.src: file not found")
    assert not (tmp_path / "run").exists()
    code, _, err = run_cli(["translate", "--ckpt", str(tmp_path / "norun")], capsys)
    assert_one_line_error(code, err, "norun: no such checkpoint or run directory")


def test_debug_shows_the_traceback(tmp_path):
    from seqlab.errors import UserError

    with pytest.raises(UserError):
        main(["train", str(tmp_path / "nope.yaml"), "--debug"])


def test_language_model_generate_and_evaluate(task_data, tmp_path, capsys):
    from tests.conftest import kind_config_tree

    run = tmp_path / "lm"
    config = write_config(tmp_path, kind_config_tree("gpt", task_data, run))
    assert run_cli(["train", str(config), "--quiet"], capsys)[0] == 0
    args = ["generate", "--ckpt", str(run), "--prompt", "the cat", "--temperature", "0.8", "--top-k", "5",
            "--seed", "3", "-n", "2", "--max-new-tokens", "6"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.startswith("the cat") for line in lines)
    assert run_cli(args, capsys)[1] == out  # seeded
    code, out, _ = run_cli(["evaluate", "--ckpt", str(run), "--text", str(task_data["lm"] / "test.txt")], capsys)
    assert code == 0 and "PPL" in out and "BLEU" not in out
    code, _, err = run_cli(["translate", "--ckpt", str(run)], capsys)
    assert_one_line_error(code, err, "has no source to translate", "seqlab generate")
    code, _, err = run_cli(["evaluate", "--ckpt", str(run), "--src", "a", "--ref", "b"], capsys)
    assert_one_line_error(code, err, "evaluated on --text FILE")
    code, _, err = run_cli(args[:3] + ["--top-p", "1.5"], capsys)
    assert_one_line_error(code, err, "--top-p 1.5 is out of range")


def test_classifier_evaluate_prints_accuracy_and_translate_labels(task_data, tmp_path, capsys, monkeypatch):
    from tests.conftest import kind_config_tree

    run = tmp_path / "cls"
    config = write_config(tmp_path, kind_config_tree("classifier", task_data, run))
    assert run_cli(["train", str(config), "--quiet"], capsys)[0] == 0
    code, out, _ = run_cli(["evaluate", "--ckpt", str(run), "--text", str(task_data["sentiment"] / "test.tsv")],
                           capsys)
    assert code == 0 and "accuracy" in out and "PPL" not in out
    code, out, _ = run_cli(["translate", "--ckpt", str(run)], capsys, stdin="the good cat sees a dog .\n",
                           monkeypatch=monkeypatch)
    assert code == 0 and out.strip() in ("pos", "neg")
    code, _, err = run_cli(["generate", "--ckpt", str(run)], capsys)
    assert_one_line_error(code, err, "generate needs a language model")


def test_bad_label_in_dev_set_names_file_and_line(task_data, tmp_path, capsys):
    from tests.conftest import kind_config_tree

    dev = tmp_path / "dev.tsv"
    dev.write_text("pos\tthe cat .\nmaybe\tthe dog .\n")
    tree = kind_config_tree("classifier", task_data, tmp_path / "run")
    tree["data"]["dev"] = {"text": str(dev)}
    code, _, err = run_cli(["train", str(write_config(tmp_path, tree))], capsys)
    assert_one_line_error(code, err, "dev.tsv:2: label 'maybe' was not seen in training")
    assert not (tmp_path / "run").exists()


def test_regression_classifier_reports_mse(task_data, tmp_path, capsys):
    from tests.conftest import kind_config_tree

    for split in ("train", "dev"):  # the score: the sentence's length in words
        lines = (task_data["sentiment"] / f"{split}.tsv").read_text().splitlines()
        text = [line.split("\t")[1] for line in lines]
        (tmp_path / f"{split}.tsv").write_text("".join(f"{len(t.split())}\t{t}\n" for t in text))
    tree = kind_config_tree("classifier", task_data, tmp_path / "run")
    tree["model"]["objective"] = "regress"
    tree["data"].update(train={"text": str(tmp_path / "train.tsv")}, dev={"text": str(tmp_path / "dev.tsv")})
    assert run_cli(["train", str(write_config(tmp_path, tree)), "--quiet"], capsys)[0] == 0
    code, out, _ = run_cli(["evaluate", "--ckpt", str(tmp_path / "run"), "--text", str(tmp_path / "dev.tsv")], capsys)
    assert code == 0 and "MSE" in out and "accuracy" not in out


def test_experiment_attention_and_report_commands(reverse_data, tmp_path, capsys):
    out = tmp_path / "lr"
    code, stdout, err = run_cli(["experiment", "long-range", "--tasks", "copy", "--lengths", "3", "--models",
                                 "gru,transformer", "--steps", "3", "--train-size", "40", "--out", str(out)], capsys)
    assert code == 0, err
    assert "Exact match on the test set" in stdout and "GRU seq2seq" in stdout and "Transformer" in stdout
    code, stdout, _ = run_cli(["report", str(out)], capsys)
    assert code == 0 and (out / "report.html").exists()
    code, _, err = run_cli(["experiment", "long-range", "--lengths", "5,x", "--out", str(tmp_path / "bad")], capsys)
    assert_one_line_error(code, err, "--lengths: expected comma-separated integers")

    run = tmp_path / "run"
    assert run_cli(["train", str(write_config(tmp_path, tiny_config_tree(reverse_data, run))), "--quiet"], capsys)[0] == 0
    code, stdout, err = run_cli(["attention", "a b c", "--ckpt", str(run), "--out", str(tmp_path / "maps")], capsys)
    assert code == 0, err
    assert (tmp_path / "maps" / "attention_grid.png").exists() and "wrote 7 PNGs" in stdout  # grid + 3 kinds × 2 heads
    code, _, err = run_cli(["attention", "a b", "--ckpt", str(run), "--beam", "0"], capsys)
    assert_one_line_error(code, err, "--beam must be at least 1")


def _every_command(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _every_command(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_option_help_is_printed_whole():
    """The help renderer reads markup: a "[stdin]" in a help string once vanished from --help."""
    import re

    from typer.main import get_command
    from typer.testing import CliRunner

    from seqlab.cli import app

    def flat(text):
        return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())

    commands = list(_every_command(get_command(app)))
    assert len(commands) >= 10
    for path, command in commands:
        shown = flat(CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"}).output)
        for param in command.params:
            if getattr(param, "help", None):
                assert flat(param.help) in shown, (path, param.name)
