import pytest
import torch

from seqlab.config import TransformerConfig, parse_config
from seqlab.data.batching import Example, collate
from seqlab.errors import UserError
from seqlab.models import build_model
from seqlab.runs import BEST, LAST
from seqlab.training.checkpoint import read_checkpoint
from seqlab.training.loss import token_cross_entropy
from seqlab.training.distributed import Processes
from seqlab.training.trainer import make_optimizer, train, update
from tests.conftest import tiny_config_tree


def test_overfitting_one_batch_drives_the_loss_near_zero():
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=32, n_heads=4, n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0)
    model = build_model(cfg, 16, 16)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 16, (n,), generator=g).tolist() for n in (5, 7, 3, 6)]
    batch = collate([Example(i, s, s[::-1]) for i, s in enumerate(seqs)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    for _ in range(150):
        loss = token_cross_entropy(model(batch.src, batch.tgt_in), batch.tgt_out) / batch.n_targets
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02


def test_weight_decay_is_decoupled_and_spares_biases_and_layer_norms(reverse_data, tmp_path):
    cfg = parse_config(tiny_config_tree(reverse_data, tmp_path / "run", weight_decay=0.1, lr=0.01))
    model = build_model(cfg.model, 16, 16)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():  # a zero gradient: Adam's step is 0, only the decay moves a weight
        p.grad = torch.zeros_like(p)
    make_optimizer(model, cfg).step()
    for name, p in model.named_parameters():
        # decoupled: θ(1 − lr·λ); an L2 term in the gradient would have moved every weight by ≈ lr instead
        expected = before[name] * (1 - 0.01 * 0.1) if p.dim() >= 2 else before[name]
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("fused", [True, False])
def test_an_update_with_a_non_finite_gradient_is_skipped_on_the_device(tiny_config, monkeypatch, fused):
    import seqlab.training.trainer as trainer

    torch.manual_seed(0)
    model = build_model(tiny_config.model, 16, 16)
    optimizer = make_optimizer(model, tiny_config)
    if not fused:  # the multi-tensor AdamW, where no fused kernel exists: it reads the flag on the host
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
    assert bool(optimizer.defaults.get("fused")) == fused
    group = [[Example(0, [4, 5, 6], [6, 5, 4]), Example(1, [7, 8], [8, 7])]]
    real, poison = trainer.batch_loss, {"on": False}
    monkeypatch.setattr(trainer, "batch_loss", lambda *a: real(*a) * (float("nan") if poison["on"] else 1.0))

    loss, targets, applied = update(model, optimizer, group, Processes(), tiny_config, torch.device("cpu"))
    assert applied.dtype == torch.bool and bool(applied) and targets == 7 and torch.isfinite(loss)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in optimizer.state[next(model.parameters())].items()}

    poison["on"] = True
    loss, _, applied = update(model, optimizer, group, Processes(), tiny_config, torch.device("cpu"))
    assert not bool(applied) and torch.isnan(loss)
    for k, v in model.state_dict().items():  # nothing moved: weights, Adam's moments, its step count
        assert torch.equal(v, before[k]), k
    for k, v in optimizer.state[next(model.parameters())].items():
        assert torch.equal(v, moments[k]), k
    assert not hasattr(optimizer, "found_inf")

    poison["on"] = False
    assert bool(update(model, optimizer, group, Processes(), tiny_config, torch.device("cpu"))[2])
    assert int(optimizer.state[next(model.parameters())]["step"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_cuda_update_never_waits_for_the_device(reverse_data, tmp_path, precision):
    cfg = parse_config(tiny_config_tree(reverse_data, tmp_path / "r", precision=precision, device="cuda"))
    device = torch.device("cuda")
    model = build_model(cfg.model, 16, 16).to(device)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    group = [[Example(0, [4, 5, 6], [6, 5, 4]), Example(1, [7, 8], [8, 7])]]
    for _ in range(2):  # the first updates make the optimizer's state
        update(model, optimizer, group, Processes(), cfg, device, scaler)
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync raises
    try:
        for _ in range(3):
            update(model, optimizer, group, Processes(), cfg, device, scaler)
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_without_weight_decay_the_optimizer_is_the_papers_adam(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config.model, 16, 16)
    reference = build_model(tiny_config.model, 16, 16)
    reference.load_state_dict(model.state_dict())
    ours = make_optimizer(model, tiny_config)
    adam = torch.optim.Adam(reference.parameters(), lr=tiny_config.peak_lr(), betas=tiny_config.train.adam_betas,
                            eps=tiny_config.train.adam_eps)
    for step in range(3):
        for m in (model, reference):
            g = torch.Generator().manual_seed(step)
            for p in m.parameters():
                p.grad = torch.randn(p.shape, generator=g)
        ours.step()
        adam.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q)


def test_label_smoothing_and_padding_in_the_loss():
    logits = torch.randn(2, 3, 10)
    target = torch.tensor([[4, 5, 0], [6, 0, 0]])
    expected = -torch.log_softmax(logits, -1)[[0, 0, 1], [0, 1, 0], [4, 5, 6]].sum()
    assert token_cross_entropy(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    assert token_cross_entropy(logits, target, 0.1).item() > 0


def final_weights(run_dir):
    tensors, _ = read_checkpoint(run_dir / LAST)
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def test_run_directory_contents(tiny_config):
    result = train(tiny_config, progress=False)
    run = tiny_config.run_dir
    for name in ("config.yaml", "tokenizer.model", LAST, BEST, "checkpoint_last.json", "train.log"):
        assert (run / name).exists(), name
    assert any((run / "tensorboard").iterdir())
    assert result.state.step == 12 and len(result.state.history) == 2
    assert {"loss", "ppl", "bleu", "chrf"} <= set(result.last_validation)
    log = (run / "train.log").read_text()
    assert "valid loss" in log and "tok/s" in log and "train " in log


def test_same_seed_same_weights(reverse_data, tmp_path):
    a = train(parse_config(tiny_config_tree(reverse_data, tmp_path / "a")), progress=False)
    b = train(parse_config(tiny_config_tree(reverse_data, tmp_path / "b")), progress=False)
    wa, wb = final_weights(a.run_dir), final_weights(b.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_exactly(reverse_data, tmp_path):
    straight = train(parse_config(tiny_config_tree(reverse_data, tmp_path / "s")), progress=False)
    first = parse_config(tiny_config_tree(reverse_data, tmp_path / "r", max_steps=6))
    train(first, progress=False)
    resumed = train(parse_config(tiny_config_tree(reverse_data, tmp_path / "r")), resume=True, progress=False)
    assert resumed.state.step == straight.state.step == 12
    ws, wr = final_weights(straight.run_dir), final_weights(resumed.run_dir)
    assert all(torch.equal(ws[k], wr[k]) for k in ws)


def test_refuses_to_overwrite_a_run_and_checks_resume(tiny_config, reverse_data, tmp_path):
    train(tiny_config, progress=False)
    before = (tiny_config.run_dir / LAST).read_bytes()
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        train(tiny_config, progress=False)
    assert (tiny_config.run_dir / LAST).read_bytes() == before
    changed = tiny_config_tree(reverse_data, tiny_config.run_dir)
    changed["model"]["d_ff"] = 128
    with pytest.raises(UserError, match="config key model.d_ff is 128 but the checkpoint"):
        train(parse_config(changed), resume=True, progress=False)
    with pytest.raises(UserError, match="no checkpoint_last.safetensors to resume"):
        train(parse_config(tiny_config_tree(reverse_data, tmp_path / "fresh")), resume=True, progress=False)
    assert not (tmp_path / "fresh").exists()


def test_empty_corpus_after_filtering_writes_nothing(reverse_data, tmp_path):
    tree = tiny_config_tree(reverse_data, tmp_path / "run")
    tree["data"]["max_len"] = 1
    with pytest.raises(UserError, match="no training pairs left after filtering.*dropped 300 over the length limit"):
        train(parse_config(tree), progress=False)
    assert not (tmp_path / "run").exists()


def test_progress_bar_length_follows_the_budget_that_ends_the_run(tiny_config):
    from seqlab.training.trainer import TrainState, expected_total_steps

    cfg = tiny_config.model_copy(update={"train": tiny_config.train.model_copy(update={"max_steps": 1000})})
    state = TrainState(step=100, epoch=1, next_batch=10)
    assert expected_total_steps(cfg, state, 50, 2.0, None) == 1000  # only max_steps
    assert expected_total_steps(cfg, state, 50, 2.0, 60.0) == 220  # 60 s left at 2 steps/s
    cfg.train.max_epochs = 3
    assert expected_total_steps(cfg, state, 50, 2.0, None) == 100 + 2 * 50 - 10  # the rest of epochs 2 and 3
    assert expected_total_steps(cfg, state, 50, 2.0, -5.0) == 100  # over time: ends now


def small_batch(kind: str):
    """A handful of examples of the shape each kind trains on."""
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 16, (n,), generator=g).tolist() for n in (5, 7, 3, 6)]
    if kind in ("gpt", "rnn_lm"):  # distinct first tokens: after them, each sequence is determined
        return collate([Example(i, None, [4 + i] + s) for i, s in enumerate(seqs)])
    if kind == "classifier":
        return collate([Example(i, s, i % 3) for i, s in enumerate(seqs)])
    if kind == "vector_to_seq":
        return collate([Example(i, torch.randn(40, generator=g), s) for i, s in enumerate(seqs)])
    return collate([Example(i, s, s[::-1]) for i, s in enumerate(seqs)])


@pytest.mark.parametrize("kind", ["transformer", "rnn_seq2seq", "rnn_seq2seq/plain", "gpt", "rnn_lm", "classifier",
                                  "vector_to_seq"])
def test_every_kind_overfits_a_small_batch(kind):
    from seqlab.config import MODEL_CONFIGS
    from seqlab.training.loss import batch_loss
    from tests.conftest import TINY_MODELS

    torch.manual_seed(0)
    kind, _, variant = kind.partition("/")
    options = dict(TINY_MODELS[kind], **({"attention": "none", "bidirectional": False} if variant == "plain" else {}))
    model = build_model(MODEL_CONFIGS[kind](**options), 16, 3 if kind == "classifier" else 16)
    batch = small_batch(kind)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if "rnn" in kind or kind == "vector_to_seq" else 3e-3)
    for _ in range(200):
        loss = batch_loss(model, batch) / batch.n_targets
        opt.zero_grad()
        loss.backward()
        opt.step()
    if kind in ("gpt", "rnn_lm"):
        # The first token of each sequence follows <bos> alone: no model can know which of the four
        # comes, so it costs log 4 at best. Every later token is determined by the ones before it.
        with torch.no_grad():
            later = token_cross_entropy(model(None, batch.tgt_in)[:, 1:], batch.tgt_out[:, 1:])
        loss = later / (batch.n_targets - 4)
    assert loss.item() < 0.05, loss.item()
