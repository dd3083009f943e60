"""Experiment 2: why far tokens are forgotten, measured on both sides of the network.

Backward ("the farther, the more forgotten", lecture §01): the gradient of the loss at the last
step T with respect to the input at step t, ‖∂L_T/∂x_t‖, against the distance T − t. Through a
tanh recurrence it is a product of T − t Jacobians and shrinks geometrically (a straight line
on a log scale); LSTM and GRU gates slow the decay; self-attention reaches every position in one
step.

Forward ("the longer it runs, the blurrier"): how well the token at position t can be read back
from the final state h_T by a linear probe (ridge regression onto the one-hot token), against
the distance T − t. Chance is 1 / (number of symbols).

Both are measured for a tanh RNN, an LSTM, a GRU and a causal Transformer, each freshly
initialised and after training as a next-token predictor on the built-in synthetic language,
on sequences of random tokens (so only memory, not grammar, can recover a token).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from seqlab.analysis.plots import line_panels, write_csv
from seqlab.config import parse_config
from seqlab.data.synth import sentence
from seqlab.errors import UserError
from seqlab.models import build_model, count_parameters
from seqlab.runs import load_model
from seqlab.training.trainer import train

ENCODERS = {  # causal next-token models; the RNNs share one state size (128), what the probe reads
    "rnn": {"kind": "rnn_lm", "cell": "rnn", "embed_dim": 64, "hidden_size": 128},
    "lstm": {"kind": "rnn_lm", "cell": "lstm", "embed_dim": 64, "hidden_size": 128},
    "gru": {"kind": "rnn_lm", "cell": "gru", "embed_dim": 64, "hidden_size": 128},
    "transformer": {"kind": "gpt", "d_model": 64, "n_heads": 4, "n_layers": 2, "d_ff": 256, "dropout": 0.0},
}
LABELS = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU", "transformer": "Transformer (causal)"}


@dataclass
class GradientSettings:
    models: list[str] = field(default_factory=lambda: list(ENCODERS))
    length: int = 40  # T: the position whose loss is differentiated / whose state is probed
    steps: int = 1500  # training budget per model (steps and minutes, whichever comes first)
    minutes: float = 1.0
    train_size: int = 4000
    probe_size: int = 2000  # random sequences for the probe (3/4 to fit it, 1/4 to score it)
    seed: int = 1


def embedding_and_state_modules(model):
    """Where the token embeddings come out (x_t) and where the final states h_t come out."""
    if hasattr(model, "tok_embed"):  # GPT: x_t = token + position embedding; h_t after the final LayerNorm
        return model.tok_embed, model.norm
    return model.decoder.embed, model.decoder.rnn  # RNN LM: embeddings, then the recurrent layer


def run_with_probes(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits (B, T, V), the embeddings x as a leaf that gradients reach (B, T, E), and the states h (B, T, H)."""
    embed, state_module = embedding_and_state_modules(model)
    captured = {}

    def leaf(module, args, output):
        captured["x"] = output.detach().requires_grad_(True)
        return captured["x"]

    def keep(module, args, output):
        captured["h"] = output[0] if isinstance(output, tuple) else output

    hooks = [embed.register_forward_hook(leaf), state_module.register_forward_hook(keep)]
    try:
        logits = model.decode(tokens)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, captured["x"], captured["h"]


def gradient_by_distance(model, tokens: torch.Tensor) -> list[float]:
    """Mean ‖∂L_T/∂x_t‖ over the batch for distances T − t = 0 … T − 1; L_T is the last step's cross-entropy."""
    model.eval()
    inputs, target = tokens[:, :-1], tokens[:, -1]
    logits, x, _ = run_with_probes(model, inputs)
    loss = F.cross_entropy(logits[:, -1].float(), target)  # L_T: predicting the token after x_T
    (grad,) = torch.autograd.grad(loss, x)
    norms = grad.norm(dim=-1).mean(dim=0)  # (T,)
    return norms.flip(0).tolist()  # index = distance T − t


@torch.no_grad()
def probe_by_distance(model, tokens: torch.Tensor, ridge: float = 1e-2) -> list[float]:
    """Accuracy of a linear probe reading the token at distance d from h_T, for d = 0 … T − 1."""
    model.eval()
    _, _, h = run_with_probes(model, tokens)
    features = h[:, -1].float()  # (N, H): the final state
    features = torch.cat([features, torch.ones(len(features), 1)], dim=1)  # + bias
    n_fit = len(features) * 3 // 4
    fit, held = features[:n_fit], features[n_fit:]
    gram = fit.T @ fit + ridge * len(fit) * torch.eye(fit.size(1))
    vocab = int(tokens.max()) + 1
    accuracy = []
    T = tokens.size(1)
    for distance in range(T):
        target = tokens[:, T - 1 - distance]
        onehot = F.one_hot(target[:n_fit], vocab).float()
        weights = torch.linalg.solve(gram, fit.T @ onehot)  # ridge regression onto the one-hot token
        predicted = (held @ weights).argmax(dim=-1)
        accuracy.append(100.0 * (predicted == target[n_fit:]).float().mean().item())
    return accuracy


def stream_lines(rng: random.Random, n: int, min_words: int) -> list[str]:
    """Lines of consecutive synthetic sentences, each at least ``min_words`` words: LM training text."""
    lines = []
    for _ in range(n):
        words: list[str] = []
        while len(words) < min_words:
            words += sentence(rng)[0].split()
        lines.append(" ".join(words))
    return lines


def run_gradients(s: GradientSettings, out: Path, log=print) -> dict:
    unknown = [m for m in s.models if m not in ENCODERS]
    if unknown:
        raise UserError(f"--models: unknown model {unknown[0]!r}; choose from {', '.join(ENCODERS)}")
    if s.length < 2:
        raise UserError("--length must be at least 2")
    if (out / "experiment.json").exists():
        raise UserError(f"{out} already holds an experiment; choose another --out (nothing was changed)")
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(s.seed)
    data = out / "data"
    data.mkdir(exist_ok=True)
    for split, n in (("train", s.train_size), ("dev", 100)):
        (data / f"{split}.txt").write_text("".join(line + "\n" for line in stream_lines(rng, n, s.length + 1)))

    grad_rows, probe_rows, sizes = [], [], {}
    for name in s.models:
        tree = {"run_dir": str(out / "runs" / name),
                "data": {"train": {"text": str(data / "train.txt")}, "dev": {"text": str(data / "dev.txt")},
                         "max_len": 4 * s.length},
                "tokenizer": {"type": "word", "vocab_size": 64},
                "model": {**ENCODERS[name], "max_positions": 4 * s.length + 8},
                "train": {"seed": s.seed, "max_tokens": 2048, "max_steps": s.steps, "max_minutes": s.minutes,
                          "lr": 2e-3, "warmup_steps": min(100, s.steps), "label_smoothing": 0.0,
                          "valid_every": s.steps, "metric": "loss", "patience": None, "log_every": 50}}
        cfg = parse_config(tree)
        torch.manual_seed(s.seed)
        result = train(cfg, progress=False)
        loaded = load_model(cfg.run_dir)
        trained, vocab = loaded.model, len(loaded.tgt_tok)
        torch.manual_seed(s.seed)
        fresh = build_model(cfg.model, vocab, vocab)
        sizes[name] = count_parameters(fresh)
        g = torch.Generator().manual_seed(s.seed)
        probe_tokens = torch.randint(4, vocab, (s.probe_size, s.length), generator=g)  # random words, no <pad>
        grad_tokens = torch.randint(4, vocab, (64, s.length + 1), generator=g)
        for state, model in (("fresh", fresh), ("trained", trained)):
            grads, probes = gradient_by_distance(model, grad_tokens), probe_by_distance(model, probe_tokens)
            grad_rows += [{"model": name, "state": state, "distance": d, "gradient_norm": v} for d, v in enumerate(grads)]
            probe_rows += [{"model": name, "state": state, "distance": d, "probe_accuracy": round(v, 2)}
                           for d, v in enumerate(probes)]
        last = result.last_validation or {}
        log(f"{name}: {sizes[name]:,} parameters, trained {result.state.step} steps (dev PPL {last.get('ppl') or 0:.2f});"
            f" trained: ‖∂L_T/∂x_t‖ {grads[1]:.1e} at distance 1, {grads[-1]:.1e} at {s.length - 1}; "
            f"probe {probes[1]:.0f}% at distance 1, {probes[-1]:.0f}% at {s.length - 1}")

    write_csv(out / "gradients.csv", grad_rows)
    write_csv(out / "probe.csv", probe_rows)
    chance = 100.0 / (vocab - 4)

    def panels(rows: list[dict], key: str) -> dict:
        return {f"{state} models": {LABELS[m]: ([r["distance"] for r in rows if (r["model"], r["state"]) == (m, state)],
                                                [r[key] for r in rows if (r["model"], r["state"]) == (m, state)])
                                    for m in s.models} for state in ("fresh", "trained")}

    line_panels(out / "gradient_vs_distance.png", panels(grad_rows, "gradient_norm"),
                f"Backward: ‖∂L_T/∂x_t‖ against distance T − t (T = {s.length}, mean of 64 random sequences)",
                "distance T − t (tokens)", "gradient norm (log scale)", logy=True)
    line_panels(out / "probe_vs_distance.png", panels(probe_rows, "probe_accuracy"),
                f"Forward: token at T − d read back from h_T by a linear probe (chance {chance:.1f}%)",
                "distance d = T − t (tokens)", "probe accuracy (%)", ylim=(-3, 103))
    summary = {"experiment": "gradients", "settings": asdict(s), "parameters": sizes}
    (out / "experiment.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {"gradients": grad_rows, "probe": probe_rows, "parameters": sizes}
