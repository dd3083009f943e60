import pytest
import torch

from seqlab.config import DecodeConfig, TokenizerConfig, parse_config
from seqlab.data.tokenizer import Tokenizer
from seqlab.errors import UserError
from seqlab.evaluation import translate_lines
from seqlab.models import build_model
from seqlab.runs import BEST, load_model
from seqlab.training.trainer import train
from tests.conftest import TINY_MODELS, kind_config_tree, tiny_config_tree


@pytest.mark.parametrize("kind", list(TINY_MODELS))
def test_every_kind_round_trips_through_a_checkpoint(kind, task_data, tmp_path):
    """Train a few steps, load the best checkpoint twice: same weights, same outputs, and they are the trained ones."""
    cfg = parse_config(kind_config_tree(kind, task_data, tmp_path / "run"))
    train(cfg, progress=False)
    a, b = load_model(cfg.run_dir), load_model(cfg.run_dir / BEST)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    fresh = build_model(cfg.model, len(a.src_tok), a.codec.n_outputs)
    assert any(not torch.equal(x, y) for x, y in zip(fresh.state_dict().values(), a.model.state_dict().values()))
    if a.codec.task == "lm":
        lines = None
    else:
        files = cfg.data.dev
        path = files.text if files.text is not None else files.src
        lines = path.read_text().splitlines()[:6]
        if a.codec.task == "classify":
            lines = [line.split("\t", 1)[1] for line in lines]
    if lines is not None:
        decode = DecodeConfig(beam_size=2, batch_size=4, max_len_extra=8)
        outputs = [translate_lines(m.model, m.codec, lines, decode, torch.device("cpu")) for m in (a, b)]
        assert outputs[0] == outputs[1] and len(outputs[0]) == 6


@pytest.mark.parametrize("share", [True, False])
def test_save_load_round_trip_gives_identical_translations(reverse_data, tmp_path, share):
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    tree["model"].update(share_embeddings=share, tie_output=share)
    tree["tokenizer"]["joint"] = share
    tree["train"]["max_steps"] = 6
    cfg = parse_config(tree)
    train(cfg, progress=False)
    loaded = load_model(cfg.run_dir)
    lines = (reverse_data / "test.src").read_text().splitlines()[:12]
    decode = DecodeConfig(beam_size=3, batch_size=5)
    again = load_model(cfg.run_dir)
    before = translate_lines(loaded.model, loaded.codec, lines, decode, torch.device("cpu"), nbest=2)
    after = translate_lines(again.model, again.codec, lines, decode, torch.device("cpu"), nbest=2)
    assert before == after
    assert (cfg.run_dir / ("tokenizer.model" if share else "tokenizer.tgt.model")).exists()


def test_vocabulary_that_does_not_match_the_checkpoint(reverse_data, tmp_path):
    cfg = parse_config(tiny_config_tree(reverse_data, tmp_path / "run", max_steps=3))
    train(cfg, progress=False)
    before = (cfg.run_dir / BEST).read_bytes()
    Tokenizer.train(["x y z w"] * 5, TokenizerConfig(type="char", vocab_size=12)).save(cfg.run_dir / "tokenizer.model")
    with pytest.raises(UserError, match="do not match the checkpoint"):
        load_model(cfg.run_dir)
    assert (cfg.run_dir / BEST).read_bytes() == before


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="no checkpoint_best.safetensors or checkpoint_last.safetensors"):
        load_model(tmp_path)


@pytest.mark.parametrize("kind", ["transformer", "gpt", "classifier"])
def test_evaluating_in_shards_and_merging_equals_one_piece(kind, task_data, tmp_path):
    """What the processes of a torchrun validation compute apart and merge equals one evaluation."""
    from seqlab.data.reader import ParallelCorpus
    from seqlab.data.tasks import read_split
    from seqlab.evaluation import evaluate, merge_results

    cfg = parse_config(kind_config_tree(kind, task_data, tmp_path / "run"))
    train(cfg, progress=False)
    m = load_model(cfg.run_dir)
    dev = read_split(kind, cfg.data.dev)
    decode = DecodeConfig(beam_size=1, batch_size=7)
    whole = evaluate(m.model, m.codec, dev, decode, torch.device("cpu"))
    parts = []
    for rank in range(3):
        idx = list(range(rank, len(dev.tgt), 3))
        shard = ParallelCorpus([dev.src[i] for i in idx], [dev.tgt[i] for i in idx], [dev.line_numbers[i] for i in idx])
        parts.append((idx, evaluate(m.model, m.codec, shard, decode, torch.device("cpu"))))
    merged = merge_results(parts, dev, m.codec.task)
    assert merged.loss == pytest.approx(whole.loss, rel=1e-6) and merged.n_targets == whole.n_targets
    assert merged.hypotheses == whole.hypotheses and merged.accuracy == whole.accuracy
    if whole.scores is not None:
        assert merged.scores.bleu == pytest.approx(whole.scores.bleu)
