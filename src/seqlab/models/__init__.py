"""Models, built from a config by one small factory: ``model.kind`` names the class."""

from __future__ import annotations

from torch import nn

from seqlab.models.transformer import Transformer

MODEL_CLASSES = {"transformer": Transformer}


def build_model(model_cfg, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> nn.Module:
    """The model named by ``model_cfg.kind``, freshly initialised."""
    return MODEL_CLASSES[model_cfg.kind](model_cfg, src_vocab_size, tgt_vocab_size, pad_id)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
