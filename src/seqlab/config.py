"""Typed, validated configuration.

A run is described by one YAML file with five sections (``data``, ``tokenizer``, ``model``,
``train``, ``decode``) plus ``run_dir``. Every section forbids unknown keys, so a typo is caught
before any work starts, and every error names the key: ``config key model.d_model: ...``.
``--set key=value`` overrides are applied to the YAML tree before validation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seqlab.errors import UserError

PositiveInt = Field(gt=0)


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ParallelFiles(Section):
    src: Path  # line-aligned source text, one sentence per line
    tgt: Path  # line-aligned target text, one sentence per line


class DataConfig(Section):
    train: ParallelFiles
    dev: ParallelFiles | None = None  # validation set (loss, PPL, BLEU during training)
    test: ParallelFiles | None = None  # scored by `seqlab evaluate` and `make demo`
    max_len: int = Field(256, gt=0)  # subword tokens per side; longer training pairs are dropped and counted


class TokenizerConfig(Section):
    type: Literal["bpe", "unigram", "word", "char"] = "bpe"  # sentencepiece model_type
    vocab_size: int = Field(8000, gt=4)  # upper bound: small corpora get what they support
    joint: bool = True  # one vocabulary for source and target (needed to share embeddings)
    character_coverage: float = Field(1.0, gt=0, le=1)  # 0.9995 for languages with big alphabets


class TransformerConfig(Section):
    """The Transformer of Vaswani et al. 2017; defaults are the paper's base model."""

    kind: Literal["transformer"] = "transformer"
    d_model: int = Field(512, gt=0)
    n_heads: int = Field(8, gt=0)
    n_encoder_layers: int = Field(6, gt=0)
    n_decoder_layers: int = Field(6, gt=0)
    d_ff: int = Field(2048, gt=0)  # inner size of the position-wise feed-forward network
    dropout: float = Field(0.1, ge=0, lt=1)  # on embeddings and each sub-layer's output
    attention_dropout: float = Field(0.0, ge=0, lt=1)  # on the attention weights
    activation: Literal["relu", "gelu"] = "relu"
    layer_norm: Literal["post", "pre"] = "post"  # post-LN as in the paper; pre-LN trains more easily when deep
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_positions: int = Field(1024, gt=0)  # longest sequence the positional encoding covers
    share_embeddings: bool = True  # one embedding matrix for source and target (needs tokenizer.joint)
    tie_output: bool = True  # output projection = target embedding matrix (Press & Wolf 2017)
    attention_impl: Literal["sdpa", "manual"] = "sdpa"  # fused kernel, or the written-out softmax(QKᵀ/√d)V

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerConfig":
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        return self


class TrainConfig(Section):
    seed: int = 1
    max_tokens: int = Field(4096, gt=0)  # batch size in tokens (padded, larger side)
    max_steps: int = Field(100_000, gt=0)
    max_epochs: int | None = Field(None, gt=0)
    max_minutes: float | None = Field(None, gt=0)  # stop (and checkpoint) after this wall-clock time
    lr: float | None = Field(None, gt=0)  # peak learning rate; null = the paper's d_model^-0.5 · warmup^-0.5
    schedule: Literal["inverse_sqrt", "constant"] = "inverse_sqrt"  # the paper's warm-up, then 1/√step
    warmup_steps: int = Field(4000, ge=0)
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = Field(1e-9, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    clip_norm: float = Field(1.0, ge=0)  # 0 disables gradient clipping
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    valid_every: int = Field(1000, gt=0)  # steps between validations (and checkpoints)
    valid_max_sentences: int | None = Field(None, gt=0)  # decode only the first N dev sentences for BLEU
    metric: Literal["bleu", "loss"] = "bleu"  # what "best" and early stopping look at
    patience: int | None = Field(10, gt=0)  # validations without improvement before stopping; null = never
    log_every: int = Field(100, gt=0)
    threads: int | None = Field(None, gt=0)  # torch CPU threads; null = torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"


class DecodeConfig(Section):
    beam_size: int = Field(5, gt=0)  # 1 = greedy
    length_penalty: float = Field(1.0, ge=0)  # α of Wu et al. 2016: score / ((5 + |Y|) / 6)^α
    max_len_ratio: float = Field(1.5, gt=0)  # output length ≤ ratio · source length + max_len_extra
    max_len_extra: int = Field(10, ge=0)
    batch_size: int = Field(64, gt=0)  # sentences decoded at once


class Config(Section):
    run_dir: Path  # checkpoints, tokenizer models, logs and TensorBoard scalars go here
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: TransformerConfig = TransformerConfig()
    train: TrainConfig = TrainConfig()
    decode: DecodeConfig = DecodeConfig()

    @model_validator(mode="after")
    def _embeddings_need_joint_vocab(self) -> "Config":
        if self.model.share_embeddings and not self.tokenizer.joint:
            raise ValueError(
                "model.share_embeddings needs one vocabulary: set tokenizer.joint: true "
                "or model.share_embeddings: false"
            )
        return self

    def peak_lr(self) -> float:
        """The configured peak learning rate, or the paper's d_model^-0.5 · warmup^-0.5."""
        if self.train.lr is not None:
            return self.train.lr
        return self.model.d_model**-0.5 * max(self.train.warmup_steps, 1) ** -0.5


def describe_validation_error(err: ValidationError, source: str = "config") -> str:
    """Turn pydantic's multi-line report into one line that names each key."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key {key!r} (check its spelling and section)")
        elif e["type"] == "missing":
            parts.append(f"key {key!r} is required")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
            parts.append(f"key {key!r}: {msg}{shown}" if key else msg)
    return f"{source}: " + "; ".join(parts)


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected key=value, e.g. --set train.max_steps=1000")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return tree


def parse_config(tree: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        raise UserError(describe_validation_error(err, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a YAML config; every problem is a one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: config file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; pass a YAML config file")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(tree, dict):
        raise UserError(f"{path}: expected a mapping of sections (run_dir, data, model, ...)")
    return parse_config(apply_overrides(tree, overrides or []), source=str(path))


def config_to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def max_output_len(src_len: int, ratio: float, extra: int) -> int:
    """Longest output allowed for a source of ``src_len`` tokens: ⌊ratio · len⌋ + extra."""
    return max(1, math.floor(ratio * src_len) + extra)
