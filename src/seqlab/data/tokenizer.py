"""Subword segmentation with sentencepiece (Kudo & Richardson 2018).

``bpe`` (Sennrich et al. 2016) and ``unigram`` (Kudo 2018) learn subwords from the training data;
``word`` and ``char`` are there for synthetic tasks and teaching; ``byte`` (:class:`ByteTokenizer`)
needs no training at all: every UTF-8 byte is a token, as in GPT-2's byte-level vocabulary. The four special tokens have
fixed ids in every vocabulary: <pad>=0, <unk>=1, <bos>=2, <eos>=3. The trained model is saved
in the run directory, so a checkpoint carries the exact segmentation it was trained with, and
:meth:`Tokenizer.decode` turns ids back into plain (detokenized) text.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from seqlab.config import TokenizerConfig
from seqlab.errors import UserError

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<bos>", "eos": "<eos>"}


class Tokenizer:
    """A trained sentencepiece model: text ↔ token ids."""

    pad_id, unk_id, bos_id, eos_id = PAD, UNK, BOS, EOS

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        if self.sp.pad_id() != PAD or self.sp.eos_id() != EOS or self.sp.bos_id() != BOS:
            raise UserError("sentencepiece model does not use seqlab's special ids (<pad>=0 <unk>=1 <bos>=2 <eos>=3)")

    @classmethod
    def train(cls, sentences: Iterable[str], cfg: TokenizerConfig) -> "Tokenizer | ByteTokenizer":
        """Learn a vocabulary of at most ``cfg.vocab_size`` pieces from ``sentences`` (``byte``: nothing to learn)."""
        if cfg.type == "byte":
            return ByteTokenizer()
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=proto,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            hard_vocab_limit=False,  # a small corpus gets the vocabulary it supports
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS,
            pad_piece=SPECIALS["pad"], unk_piece=SPECIALS["unk"],
            bos_piece=SPECIALS["bos"], eos_piece=SPECIALS["eos"],
            minloglevel=2,
            num_threads=1,  # sentencepiece's result depends on thread scheduling otherwise
        )
        return cls(proto.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "Tokenizer | ByteTokenizer":
        path = Path(path)
        try:
            data = path.read_bytes()
            if data.startswith(b"{"):  # the byte tokenizer's JSON stub
                return ByteTokenizer.from_json(data, path)
            return cls(data)
        except FileNotFoundError:
            raise UserError(f"{path}: tokenizer model not found; is this a complete seqlab run directory?") from None
        except (RuntimeError, OSError) as err:
            raise UserError(f"{path}: not a sentencepiece model ({err})") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.model_proto)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts)

    def pieces(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(i)

    def decode(self, ids: list[int]) -> str:
        """Ids → detokenized text; stops at the first <eos> and ignores <pad> and <bos>."""
        if EOS in ids:
            ids = ids[: ids.index(EOS)]
        return self.sp.decode([i for i in ids if i not in (PAD, BOS)])


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 4 … 259 are bytes 0 … 255, after the four special tokens."""

    pad_id, unk_id, bos_id, eos_id = PAD, UNK, BOS, EOS
    OFFSET = 4

    @classmethod
    def from_json(cls, data: bytes, path: Path) -> "ByteTokenizer":
        if json.loads(data).get("type") != "byte":
            raise UserError(f"{path}: not a seqlab tokenizer file")
        return cls()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"type": "byte"}) + "\n", encoding="utf-8")

    def __len__(self) -> int:
        return 256 + self.OFFSET

    def encode(self, text: str) -> list[int]:
        return [b + self.OFFSET for b in text.encode("utf-8")]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def pieces(self, text: str) -> list[str]:
        return [self.id_to_piece(b + self.OFFSET) for b in text.encode("utf-8")]

    def id_to_piece(self, i: int) -> str:
        if i < self.OFFSET:
            return list(SPECIALS.values())[i]
        b = i - self.OFFSET
        return chr(b) if 32 <= b < 127 else f"<0x{b:02X}>"

    def decode(self, ids: list[int]) -> str:
        """Ids → text; stops at <eos>; a cut-off multi-byte character becomes U+FFFD."""
        if EOS in ids:
            ids = ids[: ids.index(EOS)]
        return bytes(i - self.OFFSET for i in ids if i >= self.OFFSET).decode("utf-8", errors="replace")
