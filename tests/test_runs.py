import pytest
import torch

from seqlab.config import DecodeConfig, TokenizerConfig
from seqlab.data.tokenizer import Tokenizer
from seqlab.errors import UserError
from seqlab.evaluation import translate_lines
from seqlab.models import build_model
from seqlab.runs import BEST, load_model
from seqlab.training.checkpoint import save_checkpoint
from seqlab.training.trainer import TrainState, _checkpoint_meta
from tests.conftest import tiny_config_tree
from seqlab.config import parse_config


def saved_run(reverse_data, tmp_path, share=True):
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    tree["model"].update(share_embeddings=share, tie_output=share)
    tree["tokenizer"]["joint"] = share
    cfg = parse_config(tree)
    sents = (reverse_data / "train.src").read_text().splitlines()
    src_tok = Tokenizer.train(sents, TokenizerConfig(type="word", vocab_size=32))
    tgt_tok = src_tok if share else Tokenizer.train(sents[:50], TokenizerConfig(type="char", vocab_size=32))
    torch.manual_seed(0)
    model = build_model(cfg.model, len(src_tok), len(tgt_tok)).eval()
    cfg.run_dir.mkdir()
    files = {"src": "tokenizer.model", "tgt": "tokenizer.model"} if share else {"src": "tokenizer.src.model", "tgt": "tokenizer.tgt.model"}
    src_tok.save(cfg.run_dir / files["src"])
    tgt_tok.save(cfg.run_dir / files["tgt"])
    save_checkpoint(cfg.run_dir / BEST, model, _checkpoint_meta(cfg, TrainState(), src_tok, tgt_tok, None))
    return cfg, model, src_tok, tgt_tok, sents[:12]


@pytest.mark.parametrize("share", [True, False])
def test_save_load_round_trip_gives_identical_translations(reverse_data, tmp_path, share):
    cfg, model, src_tok, tgt_tok, lines = saved_run(reverse_data, tmp_path, share)
    loaded = load_model(cfg.run_dir)
    decode = DecodeConfig(beam_size=3, batch_size=5)
    before = translate_lines(model, src_tok, tgt_tok, lines, decode, torch.device("cpu"), nbest=2)
    after = translate_lines(loaded.model, loaded.src_tok, loaded.tgt_tok, lines, decode, torch.device("cpu"), nbest=2)
    assert before == after
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_vocabulary_that_does_not_match_the_checkpoint(reverse_data, tmp_path):
    cfg, *_ = saved_run(reverse_data, tmp_path)
    Tokenizer.train(["x y z w"] * 5, TokenizerConfig(type="char", vocab_size=12)).save(cfg.run_dir / "tokenizer.model")
    with pytest.raises(UserError, match="do not match the checkpoint"):
        load_model(cfg.run_dir)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="no checkpoint_best.safetensors or checkpoint_last.safetensors"):
        load_model(tmp_path)
