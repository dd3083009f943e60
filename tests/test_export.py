"""The CTranslate2 export reproduces seqlab's translations token for token."""

import pytest
import torch

from seqlab.config import TransformerConfig
from seqlab.decoding.search import greedy_search
from seqlab.errors import UserError
from seqlab.export import ctranslate2_ids, ctranslate2_tokens, to_ctranslate2
from seqlab.models import build_model
from tests.decoding.test_search import sources

ctranslate2 = pytest.importorskip("ctranslate2")


@pytest.mark.parametrize("options", [
    dict(layer_norm="post", positional="sinusoidal"),
    dict(layer_norm="pre", positional="learned", share_embeddings=False, tie_output=False),
])
def test_ctranslate2_greedy_equals_seqlab(options, tmp_path):
    torch.manual_seed(0)
    cfg = TransformerConfig(d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64, dropout=0.0,
                            max_positions=64, **options)
    model = build_model(cfg, 40, 40).eval()
    # A random model writes random tokens: sharpen its output layer so that greedy choices are clear-cut.
    with torch.no_grad():
        (model.output_proj or model.tgt_embed).weight.mul_(8.0)
    src = sources([6, 9, 3, 7, 5], vocab=40, seed=4)
    ours = [h[0].tokens for h in greedy_search(model, src, 1.0, 6)]
    translator = ctranslate2.Translator(str(to_ctranslate2(model, tmp_path / "ct2")), device="cpu")
    batch = [ctranslate2_tokens([t for t in row if t != 0]) for row in src.tolist()]
    theirs = [ctranslate2_ids(r.hypotheses[0]) for r in translator.translate_batch(batch, beam_size=1,
                                                                                   max_decoding_length=16)]
    lengths = [(row != 0).sum().item() - 1 for row in src]
    for mine, other, n in zip(ours, theirs, lengths):
        limit = n + 6 - 1  # seqlab's limit counts <eos>; compare what both produced within it
        assert mine[:limit] == other[:limit]


def test_only_transformers_export(tmp_path):
    from seqlab.config import RNNSeq2SeqConfig

    model = build_model(RNNSeq2SeqConfig(kind="rnn_seq2seq", embed_dim=8, hidden_size=8), 20, 20)
    with pytest.raises(UserError, match="only transformer models export"):
        to_ctranslate2(model, tmp_path / "x")
