import pytest

from seqlab.config import apply_overrides, load_config, parse_config
from seqlab.errors import UserError


def base_tree():
    return {"run_dir": "runs/x", "data": {"train": {"src": "a.src", "tgt": "a.tgt"}}}


def error_of(tree) -> str:
    with pytest.raises(UserError) as err:
        parse_config(tree, source="c.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_defaults_are_the_paper_base_model():
    cfg = parse_config(base_tree())
    m = cfg.model
    assert (m.d_model, m.n_heads, m.n_encoder_layers, m.n_decoder_layers, m.d_ff) == (512, 8, 6, 6, 2048)
    assert cfg.train.adam_betas == (0.9, 0.98) and cfg.train.label_smoothing == 0.1
    assert cfg.peak_lr() == pytest.approx(512**-0.5 * 4000**-0.5)


def test_unknown_key_is_named():
    tree = base_tree()
    tree["model"] = {"d_modle": 256}
    assert error_of(tree).startswith("c.yaml: unknown key 'model.d_modle'")


def test_wrong_type_and_bad_values_are_named():
    tree = base_tree()
    tree["train"] = {"max_steps": "lots"}
    assert "key 'train.max_steps'" in error_of(tree) and "'lots'" in error_of(tree)
    tree["train"] = {"max_tokens": 0}
    assert "key 'train.max_tokens': Input should be greater than 0" in error_of(tree)
    tree["train"] = {}
    tree["model"] = {"kind": "lstm"}
    assert "key 'model.kind'" in error_of(tree)


def test_heads_must_divide_d_model():
    tree = base_tree()
    tree["model"] = {"d_model": 100, "n_heads": 8}
    assert "model.d_model (100) must be divisible by model.n_heads (8)" in error_of(tree)


def test_shared_embeddings_need_a_joint_vocabulary():
    tree = base_tree()
    tree["tokenizer"] = {"joint": False}
    assert "tokenizer.joint" in error_of(tree)
    tree["model"] = {"share_embeddings": False}
    assert parse_config(tree).tokenizer.joint is False


def test_missing_section_is_named():
    assert "key 'data' is required" in error_of({"run_dir": "r"})


def test_overrides_parse_yaml_values():
    tree = apply_overrides(base_tree(), ["train.max_steps=20", "model.layer_norm=pre", "train.patience=null",
                                         "train.adam_betas=[0.9, 0.99]"])
    cfg = parse_config(tree)
    assert cfg.train.max_steps == 20 and cfg.model.layer_norm == "pre" and cfg.train.patience is None
    assert cfg.train.adam_betas == (0.9, 0.99)
    with pytest.raises(UserError, match="expected key=value"):
        apply_overrides(base_tree(), ["train.max_steps"])


def test_load_config_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(UserError, match="is a directory"):
        load_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: x\ndata: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml line \d+: not valid YAML"):
        load_config(bad)


def test_unknown_model_kind_is_one_line_naming_the_choices():
    tree = base_tree()
    tree["model"] = {"kind": "lstm_seq2seq"}
    msg = error_of(tree)
    assert "key 'model.kind': unknown model kind 'lstm_seq2seq'" in msg and "rnn_seq2seq" in msg and "gpt" in msg


def test_a_field_another_kind_takes_is_named_with_the_kind():
    tree = base_tree()
    tree["model"] = {"kind": "rnn_seq2seq", "n_heads": 8}
    assert "unknown key 'model.n_heads': not an option of model.kind rnn_seq2seq" in error_of(tree)
    tree["model"] = {"kind": "transformer", "attention": "dot"}
    assert "unknown key 'model.attention': not an option of model.kind transformer" in error_of(tree)
    tree["model"] = {"kind": "rnn_seq2seq", "attention": "luong"}
    assert "key 'model.attention'" in error_of(tree) and "'luong'" in error_of(tree)


def test_each_kind_reads_its_own_data_layout():
    tree = base_tree()
    tree["model"] = {"kind": "gpt"}
    assert "model.kind gpt reads data.train.text" in error_of(tree)
    tree["data"]["train"] = {"text": "lm.txt"}
    cfg = parse_config(tree)
    assert cfg.validation_metric() == "loss"
    tree["model"] = {"kind": "rnn_seq2seq"}
    assert "reads line-aligned data.train.src and data.train.tgt" in error_of(tree)
    tree["model"] = {"kind": "classifier"}
    assert parse_config(tree).validation_metric() == "accuracy"
    tree["train"] = {"metric": "bleu"}
    assert "train.metric bleu does not apply to model.kind classifier" in error_of(tree)


def test_bidirectional_encoder_needs_an_even_state():
    tree = base_tree()
    tree["model"] = {"kind": "rnn_seq2seq", "bidirectional": True, "hidden_size": 33}
    assert "model.hidden_size (33) must be even" in error_of(tree)


def test_every_example_config_is_valid():
    from pathlib import Path

    configs = sorted(Path("configs").glob("*.yaml"))
    kinds = {load_config(path).model.kind for path in configs}
    assert kinds == {"transformer", "rnn_seq2seq", "gpt", "rnn_lm", "classifier", "vector_to_seq"}
