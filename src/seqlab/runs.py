"""A run directory: what ``seqlab train`` writes and what ``translate``/``evaluate`` read.

    RUN_DIR/
      config.yaml                       the validated config the run started with
      tokenizer.model                   sentencepiece model (joint vocabulary), or
      tokenizer.src.model, .tgt.model   one per side (tokenizer.joint: false)
      checkpoint_best.safetensors/.json best by the validation metric
      checkpoint_last.safetensors/.json latest, with optimizer and data position for --resume
      train.log                         what the progress bar showed, as text
      metrics.jsonl                     training loss, lr, tokens/s and validation scores, one JSON per line
      tensorboard/                      loss, lr, PPL and BLEU curves (tensorboard --logdir RUN_DIR)
"""

from __future__ import annotations

import copy

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqlab.config import Config, parse_config
from seqlab.data.tasks import TASK_OF, Codec
from seqlab.data.tokenizer import Tokenizer
from seqlab.errors import UserError
from seqlab.models import build_model
from seqlab.training.checkpoint import model_state, read_checkpoint

BEST, LAST = "checkpoint_best.safetensors", "checkpoint_last.safetensors"


def tokenizer_files(cfg: Config) -> dict[str, str]:
    """Tokenizer file names in a run directory: one shared file unless translation has two vocabularies."""
    if cfg.tokenizer.joint or TASK_OF[cfg.model.kind] != "translation":
        return {"src": "tokenizer.model", "tgt": "tokenizer.model"}
    return {"src": "tokenizer.src.model", "tgt": "tokenizer.tgt.model"}


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory (its best checkpoint, else its last)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).exists():
                return path / name
        raise UserError(f"{path}: no {BEST} or {LAST} in this directory; is it a seqlab run directory?")
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint or run directory")
    return path


def pick_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda was asked for but no CUDA device is available; use auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    codec: Codec
    config: Config
    meta: dict[str, Any]
    path: Path

    @property
    def src_tok(self):
        return self.codec.src_tok

    @property
    def tgt_tok(self):
        return self.codec.tgt_tok


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Model, tokenizers and config from a checkpoint file or run directory, ready for inference."""
    ckpt = resolve_checkpoint(path)
    tensors, meta = read_checkpoint(ckpt)
    cfg = parse_config(meta["config"], source=f"{ckpt} (stored config)")
    files = meta["tokenizers"]
    src_tok, tgt_tok = Tokenizer.load(ckpt.parent / files["src"]), Tokenizer.load(ckpt.parent / files["tgt"])
    if (len(src_tok), len(tgt_tok)) != (meta["vocab_sizes"]["src"], meta["vocab_sizes"]["tgt"]):
        raise UserError(f"{ckpt.parent}: the tokenizer vocabularies ({len(src_tok)}/{len(tgt_tok)}) do not match the "
                        f"checkpoint's ({meta['vocab_sizes']['src']}/{meta['vocab_sizes']['tgt']}); "
                        "use the tokenizer files saved with this checkpoint")
    codec = make_codec(cfg, src_tok, tgt_tok, meta.get("labels"))
    model = build_model(cfg.model, len(src_tok), codec.n_outputs)
    try:
        model.load_state_dict(model_state(tensors, meta))
    except RuntimeError as err:
        raise UserError(f"{ckpt}: weights do not fit the stored model config ({str(err).splitlines()[0]})") from None
    return LoadedModel(model.to(device).eval(), codec, cfg, meta, ckpt)


def for_inference(model: torch.nn.Module, precision: str, compile: bool = False) -> torch.nn.Module:
    """A copy of ``model`` set up for decoding in ``precision``; the model passed in is left unchanged.
    The process's malloc keeps freed memory from here on (:func:`seqlab.hardware.keep_freed_memory`).

    In every precision attention's W^Q, W^K, W^V are fused into one matrix once, instead of
    being concatenated at every decoding step (small model, greedy, fp32: 9% faster).
    ``bf16``: every weight cast to bfloat16 once, so no decoding step re-casts fp32 weights (what
    autocast alone would do at every matrix product), and, on CPUs with bf16 matrix units, laid
    out once for them (:mod:`seqlab.decoding.packed`); float32 weights too where oneDNN
    multiplies them faster than MKL (AMD). ``int8`` (CPU only): Linear layers, a tied output
    layer included, with int8 weights and activations quantized on the fly. Where the CPU has
    int8 dot products and torch has oneDNN's int8 kernels (:class:`seqlab.decoding.packed.Int8Linear`),
    the rest of the model runs in bfloat16 if the CPU has bf16 matrix units (CTranslate2's
    ``int8_bfloat16``; small benchmark model, two Zen 5 cores, alternated in one process: greedy
    3,401 → 4,380 tok/s against bf16, beam 5 1,221 → 1,358), else in float32; elsewhere torch's
    dynamic quantization (fbgemm), around float32.

    ``compile`` (bfloat16 on CPU): a Transformer's decoding steps compiled whole by
    ``torch.compile`` (:mod:`seqlab.decoding.compiled`: one graph for greedy steps, one for beam
    steps; bf16, and int8 around bf16), and other decoders' attention through a compiled kernel
    where that pays (:func:`seqlab.models.attention.decoding_kernel_applies`). The first steps
    wait for the compilation (seconds, once per process and search; a C++ compiler is needed, and
    without one decoding goes on uncompiled after a warning), so it pays on large test sets.
    """
    from seqlab.decoding.compiled import CompiledStep
    from seqlab.decoding.packed import can_pack, can_quantize, pack_linears, quantize_linears
    from seqlab.hardware import has_bf16_units, keep_freed_memory
    from seqlab.models.attention import MultiHeadAttention
    from seqlab.models.transformer import Transformer

    keep_freed_memory()  # each step's fresh megabytes come from memory already paged in

    model = copy.deepcopy(model).eval()
    onednn_int8 = precision == "int8" and can_quantize(model)
    if precision == "bf16" or (onednn_int8 and has_bf16_units(torch.device("cpu"))):
        model = model.to(torch.bfloat16)
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.fuse_projections()
            module.compiled_decoding = compile
    if onednn_int8:
        model = quantize_linears(model)
    elif precision in ("bf16", "fp32") and can_pack(model):
        model = pack_linears(model)
    elif precision == "int8":
        return _dynamic_int8(model)
    if compile and isinstance(model, Transformer) and _bf16_on_cpu(model):
        model.compiled_step = CompiledStep(model)  # decoding steps compiled whole (searches take it)
    return model


def _bf16_on_cpu(model: torch.nn.Module) -> bool:
    """Where compiled decoding steps pay: a bfloat16 model (bf16, or int8 around bf16) on the CPU.
    Float32 steps gained 5-6% for 18-32 s of compiling (benchmarks/RESULTS.md)."""
    weight = next(model.parameters(), None)
    return weight is not None and weight.device.type == "cpu" and weight.dtype == torch.bfloat16


def _dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """torch's dynamic int8 quantization (fbgemm) of every Linear layer, the output layer included."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    from seqlab.decoding.packed import give_tied_output_a_layer
    from seqlab.models.linear import as_torch_linears, torch_linear_holding

    as_torch_linears(model)  # the quantizer swaps modules of the exact class nn.Linear only
    give_tied_output_a_layer(model, torch_linear_holding)  # the output layer, the largest product, in int8 too
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works here
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return quantize_dynamic(model.cpu(), {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def make_codec(cfg: Config, src_tok, tgt_tok, labels: list[str] | None) -> Codec:
    return Codec(cfg.model.kind, src_tok, tgt_tok, labels, getattr(cfg.model, "input_dim", None))
