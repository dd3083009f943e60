"""Export a trained Transformer to CTranslate2, the C++ inference engine, for deployment or comparison.

The weights go into CTranslate2's own model specification (``ctranslate2.specs.TransformerSpec``),
the same route its OpenNMT-py and fairseq converters take, so nothing about seqlab's layout has
to be guessed: post- or pre-LN, scaled embeddings, seqlab's own sinusoidal (or learned) position
table, the shared and tied embedding matrix. Token ids become the vocabulary ``"0" … "V-1"``
(with <unk>, <s>, </s> at seqlab's special ids), so a CTranslate2 translator is fed seqlab's ids
as strings and its output maps straight back. ``ctranslate2`` is an optional dependency
(``pip install ctranslate2``); greedy outputs match seqlab's (tests/test_export.py).
"""

from __future__ import annotations

from pathlib import Path

from seqlab.data.tokenizer import BOS, EOS, PAD, UNK
from seqlab.errors import UserError


SPECIAL_NAMES = {PAD: "<blank>", UNK: "<unk>", BOS: "<s>", EOS: "</s>"}


def vocabulary(size: int) -> list[str]:
    return ctranslate2_tokens(list(range(size)))


def to_ctranslate2(model, output_dir: str | Path, quantization: str | None = None) -> Path:
    """Write ``model`` (a seqlab Transformer) as a CTranslate2 model directory; returns its path."""
    try:
        from ctranslate2.converters.converter import Converter
        from ctranslate2.converters.utils import fuse_linear
        from ctranslate2.specs import common_spec, transformer_spec
    except ImportError:
        raise UserError("export to CTranslate2 needs the ctranslate2 package: pip install ctranslate2") from None
    if model.cfg.kind != "transformer":
        raise UserError(f"only transformer models export to CTranslate2 (this is {model.cfg.kind})")
    cfg = model.cfg
    as_np = lambda t: t.detach().float().cpu().numpy()  # noqa: E731

    def linear(spec, layer) -> None:
        spec.weight = as_np(layer.weight)
        if layer.bias is not None:
            spec.bias = as_np(layer.bias)

    def layer_norm(spec, norm) -> None:
        spec.gamma, spec.beta = as_np(norm.weight), as_np(norm.bias)

    def attention(spec, mha, self_attention: bool) -> None:
        q, k, v = (common_spec.LinearSpec() for _ in range(3))
        linear(q, mha.q_proj)
        linear(k, mha.k_proj)
        linear(v, mha.v_proj)
        if self_attention:
            fuse_linear(spec.linear[0], [q, k, v])
        else:
            spec.linear[0].weight, spec.linear[0].bias = q.weight, q.bias
            fuse_linear(spec.linear[1], [k, v])
        linear(spec.linear[-1], mha.out_proj)

    def ffn(spec, block, sublayer) -> None:
        linear(spec.linear_0, block.linear1)
        linear(spec.linear_1, block.linear2)
        layer_norm(spec.layer_norm, sublayer.norm)

    def inputs(spec, table) -> None:
        embeddings = spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings  # one source feature
        embeddings.weight = as_np(table.weight)
        positions = model.positions.pe if cfg.positional == "sinusoidal" else model.positions.weight
        spec.position_encodings.encodings = as_np(positions)

    class SeqlabConverter(Converter):
        def _load(self):
            pre = cfg.layer_norm == "pre"
            spec = transformer_spec.TransformerSpec.from_config(
                (cfg.n_encoder_layers, cfg.n_decoder_layers), cfg.n_heads, pre_norm=pre,
                activation=common_spec.Activation.RELU if cfg.activation == "relu" else common_spec.Activation.GELU)
            src_table = model.src_embed if model.src_embed is not None else model.tgt_embed
            inputs(spec.encoder, src_table)
            inputs(spec.decoder, model.tgt_embed)
            for layer_spec, layer in zip(spec.encoder.layer, model.encoder_layers):
                attention(layer_spec.self_attention, layer.self_attn, True)
                layer_norm(layer_spec.self_attention.layer_norm, layer.attn_block.norm)
                ffn(layer_spec.ffn, layer.ffn, layer.ffn_block)
            for layer_spec, layer in zip(spec.decoder.layer, model.decoder_layers):
                attention(layer_spec.self_attention, layer.self_attn, True)
                layer_norm(layer_spec.self_attention.layer_norm, layer.self_attn_block.norm)
                attention(layer_spec.attention, layer.cross_attn, False)
                layer_norm(layer_spec.attention.layer_norm, layer.cross_attn_block.norm)
                ffn(layer_spec.ffn, layer.ffn, layer.ffn_block)
            if pre:
                layer_norm(spec.encoder.layer_norm, model.encoder_norm)
                layer_norm(spec.decoder.layer_norm, model.decoder_norm)
            output = model.tgt_embed.weight if model.output_proj is None else model.output_proj.weight
            spec.decoder.projection.weight = as_np(output)
            spec.config.decoder_start_token = "<s>"
            spec.register_source_vocabulary(vocabulary(src_table.num_embeddings))
            spec.register_target_vocabulary(vocabulary(model.tgt_embed.num_embeddings))
            return spec

    return Path(SeqlabConverter().convert(str(output_dir), quantization=quantization, force=True))


def ctranslate2_tokens(ids: list[int]) -> list[str]:
    """seqlab source ids (ending in <eos>) as the strings the exported vocabulary uses."""
    return [SPECIAL_NAMES.get(i, str(i)) for i in ids]


def ctranslate2_ids(tokens: list[str]) -> list[int]:
    """A CTranslate2 output (token strings, without </s>) back to seqlab ids."""
    back = {name: i for i, name in SPECIAL_NAMES.items()}
    return [back[t] if t in back else int(t) for t in tokens]
