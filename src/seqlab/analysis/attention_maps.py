"""Attention maps: which words each position looked at (``seqlab attention``).

For a Transformer: encoder self-attention (h_i = Σ_j softmax(<h_i, h_j>) h_j), masked decoder
self-attention (s_t sees s_1 … s_t) and encoder-decoder attention (Q from the decoder, K and V
from the encoder), per layer and head. For seq2seq with attention: the alignment α_ti of
Bahdanau et al. 2015, Fig. 3. For GPT: the causal self-attention of each block and head.

The sentence is translated first; the decoder maps are those of reading the translation
(teacher forcing on <bos> + output), so every row is a word the model actually wrote.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from seqlab.analysis.plots import heatmap
from seqlab.config import DecodeConfig
from seqlab.data.tokenizer import BOS, EOS
from seqlab.errors import UserError
from seqlab.evaluation import translate_ids
from seqlab.runs import LoadedModel


@contextmanager
def recording(modules):
    """The attention modules keep their weights while inside."""
    for m in modules:
        m.record = True
    try:
        yield
    finally:
        for m in modules:
            m.record, m.recorded = False, None


def piece_labels(tokenizer, ids: list[int]) -> list[str]:
    """Axis labels: the subword (or byte) of each id, as the model saw it."""
    return [tokenizer.id_to_piece(i) for i in ids]


@torch.no_grad()
def attention_maps(loaded: LoadedModel, text: str, beam: int = 1) -> tuple[dict[str, torch.Tensor], dict]:
    """{"encoder self-attention, layer 1": (H, S, S), …} and the axis labels of each map kind."""
    model, codec = loaded.model, loaded.codec
    kind = loaded.config.model.kind
    if kind == "gpt":
        ids = [BOS] + codec.tgt_tok.encode(text)
        mods = [b.attn for b in model.blocks]
        with recording(mods):
            model.decode(torch.tensor([ids]))
            maps = {f"self-attention, block {i + 1}": m.recorded[0] for i, m in enumerate(mods)}
        labels = piece_labels(codec.tgt_tok, ids)
        return maps, {"self-attention": (labels, labels)}
    if kind not in ("transformer", "rnn_seq2seq"):
        raise UserError(f"a {kind} model has no attention to draw; use a transformer, gpt or rnn_seq2seq run")
    if kind == "rnn_seq2seq" and loaded.config.model.attention == "none":
        raise UserError("this seq2seq model has no attention (model.attention: none): its decoder sees only the "
                        "context vector, so there is no alignment to draw")
    src_ids = codec.src_tok.encode(text)[: model.max_positions - 1]
    decode = DecodeConfig(**dict(loaded.config.decode.model_dump(), beam_size=beam))
    hyp = translate_ids(model, [src_ids], decode, torch.device("cpu"))[0][0].tokens
    src = torch.tensor([src_ids + [EOS]])
    tgt_in = torch.tensor([[BOS] + hyp])
    src_labels, tgt_labels = piece_labels(codec.src_tok, src_ids + [EOS]), piece_labels(codec.tgt_tok, [BOS] + hyp)
    if kind == "rnn_seq2seq":
        alignment = model.alignment(tgt_in, model.encode(src))[0]  # (T, S)
        return {"alignment (decoder step × source word)": alignment[None]}, {"alignment": (src_labels, tgt_labels)}
    groups = {"encoder self-attention": [l.self_attn for l in model.encoder_layers],
              "decoder masked self-attention": [l.self_attn for l in model.decoder_layers],
              "encoder-decoder attention": [l.cross_attn for l in model.decoder_layers]}
    with recording([m for mods in groups.values() for m in mods]):
        model(src, tgt_in)
        maps = {f"{group}, layer {i + 1}": m.recorded[0] for group, mods in groups.items() for i, m in enumerate(mods)}
    labels = {"encoder self-attention": (src_labels, src_labels),
              "decoder masked self-attention": (tgt_labels, tgt_labels),
              "encoder-decoder attention": (src_labels, tgt_labels)}
    return maps, labels


def labels_for(name: str, labels: dict) -> tuple[list[str], list[str]]:
    return next(v for k, v in labels.items() if name.startswith(k))


def draw_attention(maps: dict[str, torch.Tensor], labels: dict, out: Path, sentence: str) -> list[Path]:
    """One grid PNG (rows: layers and kinds, columns: heads) and one PNG per head; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    heads = max(m.size(0) for m in maps.values())
    longest = max(max(len(x), len(y)) for x, y in labels.values())
    cell = max(3.0, 0.16 * longest)  # about 0.16 inch per token: 40 tokens stay legible
    fig, axes = plt.subplots(len(maps), heads, figsize=(cell * heads, cell * len(maps)), squeeze=False)
    for row, (name, weights) in enumerate(maps.items()):
        x_labels, y_labels = labels_for(name, labels)
        for h in range(heads):
            ax = axes[row][h]
            if h >= weights.size(0):
                ax.axis("off")
                continue
            title = f"{name}, head {h + 1}" if weights.size(0) > 1 else name
            heatmap(ax, weights[h].numpy(), x_labels, y_labels, title)
            ax.set_xlabel("attended position (key)", fontsize=7)
            ax.set_ylabel("attending position (query)", fontsize=7)
    fig.suptitle(f"Attention weights for: {sentence[:80]}", fontsize=11)
    fig.tight_layout()
    grid = out / "attention_grid.png"
    fig.savefig(grid, dpi=90)
    plt.close(fig)
    written.append(grid)
    for name, weights in maps.items():
        x_labels, y_labels = labels_for(name, labels)
        for h in range(weights.size(0)):
            # 0.3 inch per token and 9-point labels: a 40-token sentence stays legible
            fig, ax = plt.subplots(figsize=(max(4.5, 0.3 * len(x_labels) + 2), max(4.0, 0.3 * len(y_labels) + 1.5)))
            image = heatmap(ax, weights[h].numpy(), x_labels, y_labels,
                            f"{name}, head {h + 1}" if weights.size(0) > 1 else name, font_size=9)
            ax.set_xlabel("attended position (key)")
            ax.set_ylabel("attending position (query)")
            fig.colorbar(image, ax=ax, label="attention weight")
            fig.tight_layout()
            slug = name.replace(", ", "_").replace(" ", "-").replace("(", "").replace(")", "").replace("×", "x")
            path = out / f"{slug}_head{h + 1}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written
