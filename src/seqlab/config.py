"""Typed, validated configuration.

A run is described by one YAML file with five sections (``data``, ``tokenizer``, ``model``,
``train``, ``decode``) plus ``run_dir``. Every section forbids unknown keys, so a typo is caught
before any work starts, and every error names the key: ``config key model.d_model: ...``.
``--set key=value`` overrides are applied to the YAML tree before validation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

from seqlab.errors import UserError

PositiveInt = Field(gt=0)


class Section(BaseModel):
    """Base for config sections: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataFiles(Section):
    """One split. Parallel kinds read line-aligned ``src``/``tgt``; the others read ``text``."""

    src: Path | None = None  # source side: text (translation) or numbers (vector_to_seq), one example per line
    tgt: Path | None = None  # target side, line-aligned with src
    text: Path | None = None  # plain text (gpt, rnn_lm) or label<TAB>text lines (classifier)


class DataConfig(Section):
    train: DataFiles
    dev: DataFiles | None = None  # validation set (loss, PPL, BLEU or accuracy during training)
    test: DataFiles | None = None  # scored by `seqlab evaluate` and `make demo`
    max_len: int = Field(256, gt=0)  # subword tokens per side; longer training pairs are dropped and counted


class TokenizerConfig(Section):
    type: Literal["bpe", "unigram", "word", "char", "byte"] = "bpe"  # sentencepiece model_type, or raw UTF-8 bytes
    vocab_size: int = Field(8000, gt=4)  # upper bound: small corpora get what they support (ignored for byte)
    joint: bool = True  # one vocabulary for source and target (needed to share embeddings)
    character_coverage: float = Field(1.0, gt=0, le=1)  # 0.9995 for languages with big alphabets


Cell = Literal["rnn", "lstm", "gru"]  # Elman tanh RNN, LSTM (Hochreiter & Schmidhuber 1997), GRU (Cho et al. 2014)


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
        _check_heads(self.d_model, self.n_heads)
        return self


class RNNSeq2SeqConfig(Section):
    """Encoder-decoder RNN (Sutskever et al. 2014; Cho et al. 2014), with attention as an option."""

    kind: Literal["rnn_seq2seq"]
    cell: Cell = "lstm"
    attention: Literal["none", "dot", "general", "additive"] = "none"  # none: the last encoder state is all the decoder gets
    embed_dim: int = Field(256, gt=0)
    hidden_size: int = Field(256, gt=0)  # decoder state size (a bidirectional encoder splits it over its directions)
    n_layers: int = Field(1, gt=0)  # stacked RNN layers, in the encoder and in the decoder
    bidirectional: bool = False  # encoder reads the source both ways (needs an even hidden_size)
    dropout: float = Field(0.0, ge=0, lt=1)
    share_embeddings: bool = True  # one embedding matrix for source and target (needs tokenizer.joint)
    tie_output: bool = True  # output layer = target embedding matrix
    max_positions: int = Field(1024, gt=0)  # longest source or output the decoder handles

    @model_validator(mode="after")
    def _even_bidirectional(self) -> "RNNSeq2SeqConfig":
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"model.hidden_size ({self.hidden_size}) must be even with model.bidirectional: true")
        return self


class GPTConfig(Section):
    """Decoder-only Transformer language model (Radford et al. 2018/2019)."""

    kind: Literal["gpt"]
    d_model: int = Field(256, gt=0)
    n_heads: int = Field(4, gt=0)
    n_layers: int = Field(4, gt=0)
    d_ff: int = Field(1024, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    max_positions: int = Field(512, gt=0)  # context length: learned position embeddings cover this many tokens
    tie_output: bool = True
    attention_impl: Literal["sdpa", "manual"] = "sdpa"

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "GPTConfig":
        _check_heads(self.d_model, self.n_heads)
        return self


class RNNLMConfig(Section):
    """Recurrent language model: the lecture's next-token predictor h_t → ŷ_t."""

    kind: Literal["rnn_lm"]
    cell: Cell = "lstm"
    embed_dim: int = Field(256, gt=0)
    hidden_size: int = Field(256, gt=0)
    n_layers: int = Field(1, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    tie_output: bool = True  # output layer = embedding matrix (a projection h → embed_dim is added when sizes differ)
    max_positions: int = Field(1024, gt=0)  # longest sequence generated


class ClassifierConfig(Section):
    """Many-to-one: one label (or score) for a whole sequence."""

    kind: Literal["classifier"]
    encoder: Literal["rnn", "lstm", "gru", "transformer"] = "lstm"
    objective: Literal["classify", "regress"] = "classify"  # cross-entropy over labels, or MSE on a number
    pooling: Literal["last", "mean"] = "last"  # last: h_T of the RNN (first token's state for transformer); mean: average
    embed_dim: int = Field(128, gt=0)  # also the Transformer's d_model
    hidden_size: int = Field(128, gt=0)  # RNN state size
    n_layers: int = Field(1, gt=0)
    n_heads: int = Field(4, gt=0)  # transformer encoder only
    d_ff: int = Field(512, gt=0)  # transformer encoder only
    dropout: float = Field(0.1, ge=0, lt=1)
    max_positions: int = Field(1024, gt=0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ClassifierConfig":
        if self.encoder == "transformer":
            _check_heads(self.embed_dim, self.n_heads, width_key="model.embed_dim")
        return self


class VectorToSeqConfig(Section):
    """One-to-many: a decoder conditioned on one input vector (the lecture's captioning case)."""

    kind: Literal["vector_to_seq"]
    input_dim: int = Field(gt=0)  # numbers per source line
    condition: Literal["init_state", "prefix"] = "init_state"  # vector → decoder's h_0, or → its first input
    cell: Cell = "gru"
    embed_dim: int = Field(128, gt=0)
    hidden_size: int = Field(256, gt=0)
    n_layers: int = Field(1, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    tie_output: bool = True
    max_positions: int = Field(1024, gt=0)


MODEL_CONFIGS = {"transformer": TransformerConfig, "rnn_seq2seq": RNNSeq2SeqConfig, "gpt": GPTConfig,
                 "rnn_lm": RNNLMConfig, "classifier": ClassifierConfig, "vector_to_seq": VectorToSeqConfig}


def _model_kind(value: Any) -> str | None:
    """``model.kind`` picks the config class; a model section without one is a Transformer."""
    if isinstance(value, dict):
        return value.get("kind", "transformer")
    return getattr(value, "kind", None)


ModelConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in MODEL_CONFIGS.items())],  # noqa: UP007
    Discriminator(_model_kind),
]


def _check_heads(width: int, heads: int, width_key: str = "model.d_model") -> None:
    if width % heads:
        raise ValueError(f"{width_key} ({width}) must be divisible by model.n_heads ({heads})")


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
    valid_every: int = Field(1000, gt=0)  # steps between validations (each also writes checkpoints)
    save_every: int | None = Field(None, gt=0)  # steps between checkpoints for --resume; null = valid_every
    keep_last: int = Field(1, gt=0)  # step checkpoints kept (checkpoint_STEP.safetensors) besides the best
    update_freq: int = Field(1, gt=0)  # batches whose gradients are summed into one update (per process)
    max_bad_steps: int = Field(5, gt=0)  # consecutive non-finite updates (skipped) before stopping; checked when logging
    valid_max_sentences: int | None = Field(None, gt=0)  # decode only the first N dev sentences for BLEU
    metric: Literal["bleu", "loss", "accuracy"] | None = None  # what "best" means; null: bleu, accuracy or loss by kind
    patience: int | None = Field(10, gt=0)  # validations without improvement before stopping; null = never
    log_every: int = Field(100, gt=0)
    threads: int | None = Field(None, gt=0)  # torch CPU threads; null = torch's default
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16: autocast, fp32 master weights; fp16: CUDA only
    compile: bool = False  # torch.compile the model (measure first: on CPU it rarely pays for its compile time)

    @model_validator(mode="after")
    def _fp16_needs_cuda(self) -> "TrainConfig":
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("train.precision fp16 needs CUDA (with a gradient scaler); on CPU use bf16 or fp32")
        return self


class DecodeConfig(Section):
    beam_size: int = Field(5, gt=0)  # 1 = greedy
    length_penalty: float = Field(1.0, ge=0)  # α of Wu et al. 2016: score / ((5 + |Y|) / 6)^α
    max_len_ratio: float = Field(1.5, ge=0)  # output length ≤ ratio · source length + max_len_extra
    max_len_extra: int = Field(10, ge=0)
    batch_size: int = Field(64, gt=0)  # sentences decoded at once


LM_KINDS = ("gpt", "rnn_lm")  # decoder-only: plain text in, next-token prediction
TEXT_KINDS = LM_KINDS + ("classifier",)  # read data.*.text rather than src/tgt


class Config(Section):
    run_dir: Path  # checkpoints, tokenizer models, logs and TensorBoard scalars go here
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = TransformerConfig()
    train: TrainConfig = TrainConfig()
    decode: DecodeConfig = DecodeConfig()

    @model_validator(mode="after")
    def _fits_the_model_kind(self) -> "Config":
        kind = self.model.kind
        if getattr(self.model, "share_embeddings", False) and not self.tokenizer.joint:
            raise ValueError(
                "model.share_embeddings needs one vocabulary: set tokenizer.joint: true "
                "or model.share_embeddings: false"
            )
        reads_text = kind in TEXT_KINDS
        for split in ("train", "dev", "test"):
            files = getattr(self.data, split)
            if files is None:
                continue
            if reads_text and (files.text is None or files.src or files.tgt):
                what = "label<TAB>text lines" if kind == "classifier" else "plain text, one example per line"
                raise ValueError(f"model.kind {kind} reads data.{split}.text ({what}), not src/tgt")
            if not reads_text and (files.src is None or files.tgt is None or files.text):
                raise ValueError(f"model.kind {kind} reads line-aligned data.{split}.src and data.{split}.tgt, not text")
        allowed = {"classifier": ("accuracy", "loss")}.get(kind, ("loss",) if kind in LM_KINDS else ("bleu", "loss"))
        if self.train.metric is not None and self.train.metric not in allowed:
            raise ValueError(f"train.metric {self.train.metric} does not apply to model.kind {kind}; "
                             f"use {' or '.join(allowed)}")
        if self.tokenizer.type == "byte" and not self.tokenizer.joint:
            raise ValueError("tokenizer.type byte is one vocabulary for every side: set tokenizer.joint: true")
        return self

    def validation_metric(self) -> str:
        """What "best" means: train.metric, else BLEU for sequence outputs, accuracy for labels, else loss."""
        if self.train.metric is not None:
            return self.train.metric
        if self.model.kind == "classifier":
            return "accuracy" if self.model.objective == "classify" else "loss"
        return "loss" if self.model.kind in LM_KINDS else "bleu"

    def peak_lr(self) -> float:
        """The configured peak learning rate, or the paper's d_model^-0.5 · warmup^-0.5."""
        if self.train.lr is not None:
            return self.train.lr
        width = getattr(self.model, "d_model", None) or getattr(self.model, "hidden_size", None) or self.model.embed_dim
        return width**-0.5 * max(self.train.warmup_steps, 1) ** -0.5


def describe_validation_error(err: ValidationError, source: str = "config") -> str:
    """Turn pydantic's multi-line report into one line that names each key."""
    parts = []
    for e in err.errors():
        loc = list(e["loc"])
        if loc[:1] == ["model"] and len(loc) > 1 and loc[1] in MODEL_CONFIGS:
            kind = loc.pop(1)  # pydantic puts the union's tag in the path: model.<kind>.field
        else:
            kind = None
        key = ".".join(str(p) for p in loc)
        if e["type"] == "union_tag_invalid":
            parts.append(f"key 'model.kind': unknown model kind {e['input'].get('kind')!r}; "
                         f"choose one of {', '.join(MODEL_CONFIGS)}")
        elif e["type"] == "extra_forbidden" and kind is not None:
            parts.append(f"unknown key {key!r}: not an option of model.kind {kind} (see configs/ for its options)")
        elif e["type"] == "extra_forbidden":
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
