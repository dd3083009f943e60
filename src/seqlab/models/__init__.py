"""Models, built from a config by one small factory: ``model.kind`` names the class.

Every model takes ``(cfg, src_vocab_size, tgt_vocab_size, pad_id)``. For the classifier the
"target vocabulary" is its set of labels.
"""

from __future__ import annotations

from torch import nn

from seqlab.models.lm import GPT, RNNLM
from seqlab.models.many_to_one import SequenceClassifier
from seqlab.models.one_to_many import VectorToSeq
from seqlab.models.seq2seq import RNNSeq2Seq
from seqlab.models.transformer import Transformer

MODEL_CLASSES = {
    "transformer": Transformer,  # encoder-decoder, Vaswani et al. 2017
    "rnn_seq2seq": RNNSeq2Seq,  # encoder-decoder RNN, with or without attention
    "gpt": GPT,  # decoder-only Transformer language model
    "rnn_lm": RNNLM,  # recurrent language model
    "classifier": SequenceClassifier,  # many-to-one
    "vector_to_seq": VectorToSeq,  # one-to-many
}


def build_model(model_cfg, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> nn.Module:
    """The model named by ``model_cfg.kind``, freshly initialised."""
    return MODEL_CLASSES[model_cfg.kind](model_cfg, src_vocab_size, tgt_vocab_size, pad_id)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
