"""The contract between an encoder-decoder model and the search/evaluation code.

Every encoder-decoder model in seqlab offers three separate methods, so one training loop, one
search module and one evaluation path serve them all:

* ``encode(src) -> EncoderOutput``: read the padded source batch (B, S) once;
* ``decode(tgt_in, enc) -> logits``: next-token logits (B, T, V) for a target prefix (B, T);
* ``forward(src, tgt_in) = decode(tgt_in, encode(src))``, used for teacher-forced training.

For test-time decoding, every model also offers one step at a time (the contract of fairseq's
incremental decoder, with the cache an explicit object rather than hidden module state):

* ``decode_step(new_tokens, enc, cache) -> (logits, cache)``: logits (N, V) for the newest token
  (N, 1) given everything before it, which the :class:`DecoderCache` holds: the keys and values
  of each self-attention layer so far, the encoder's keys and values for encoder-decoder
  attention (computed once per sentence), or an RNN's state. ``cache=None`` starts a sequence.
  Its outputs equal ``decode(all_tokens, enc)[:, -1]`` (tests/decoding/test_incremental.py).

Decoder-only language models keep the same contract with nothing to encode: ``encode`` returns
``None`` and ``decode(tokens, None)`` predicts the next token from the prefix alone. Every model
also has ``max_positions``, the longest sequence it reads or writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from seqlab.models.attention import cache_capacity


@dataclass
class EncoderOutput:
    """What the decoder needs from the source sentence."""

    memory: torch.Tensor  # (B, S, C) encoder states h_1 … h_S
    src_mask: torch.Tensor  # (B, S) bool, True at real (non-<pad>) source positions
    state: tuple[torch.Tensor, ...] | None = None  # RNN decoders' initial state, each (L, B, H): the context vector
    rows_per_source: int = 1  # > 1 after repeat_for_beams: each sentence fills this many consecutive rows

    def index_select(self, index: torch.Tensor) -> "EncoderOutput":
        """Rows ``index`` of the batch."""
        state = None if self.state is None else tuple(s.index_select(1, index) for s in self.state)
        return EncoderOutput(self.memory.index_select(0, index), self.src_mask.index_select(0, index), state)

    def keep_sources(self, sources: torch.Tensor) -> "EncoderOutput":
        """Only the sentences ``sources`` (indices among this batch's sentences), each with all of
        its ``rows_per_source`` rows: a search drops the sentences it has finished."""
        per = self.rows_per_source
        rows = (sources[:, None] * per + torch.arange(per, device=sources.device)).view(-1)
        kept = self.index_select(rows)
        kept.rows_per_source = per
        return kept

    def repeat_for_beams(self, beams: int) -> "EncoderOutput":
        """Each sentence repeated for its beams in beam search, in consecutive rows (B·K rows).

        ``rows_per_source`` tells the Transformer that every K consecutive rows share one source,
        so it keeps the encoder's keys and values once per sentence, not once per beam.
        """
        index = torch.arange(self.memory.size(0), device=self.memory.device).repeat_interleave(beams)
        repeated = self.index_select(index)
        repeated.rows_per_source = beams
        return repeated


@dataclass
class DecoderCache:
    """What a decoder remembers between steps; each tensor has the batch (or beam) rows in dim 0,
    except RNN states, which are (L, N, H) like torch.nn's."""

    position: int = 0  # tokens read so far: the next token's position
    self_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: K, V (N, H, ≥ t, d_k)
    cross_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer: encoder K, V (N, H, S, d_k)
    state: tuple[torch.Tensor, ...] | None = None  # RNN decoders: the state after the last token
    spare_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # buffers the next reorder may write into
    kv_rows: torch.Tensor | None = None  # (N, position): the row of self_kv holding each position's K, V

    def index_select(self, index: torch.Tensor, same_sources: bool = False,
                     sources: torch.Tensor | None = None, kv_in_place: bool = False) -> "DecoderCache":
        """Keep rows ``index``: beam search moves each surviving hypothesis's memory along with it.

        ``same_sources``: every row moves to a row of the same source sentence (beams of one
        sentence trading places), so the encoder's K/V, one per sentence, stay put: the copy
        that otherwise costs half of a beam step is skipped. ``sources``, with ``same_sources``:
        the sentences that remain when some leave the batch; their encoder K/V are kept. The
        cache passed in is consumed (its buffers become the next reorder's destination).

        ``kv_in_place`` (and from then on): the self-attention K, V stay where they are and
        ``kv_rows`` records, for each surviving row, which row holds its keys and values at each
        position (its ancestors'); the next step stores its own at a new position of its own row
        and attention reads the rest through the record (:meth:`MultiHeadAttention.extend`). A
        compiled beam step reads them there as fast as moved ones, and moving them had taken a
        fifth of a small int8 beam-5 search.
        """
        pick = lambda pairs, rows: None if pairs is None else [  # noqa: E731
            (k.index_select(0, rows), v.index_select(0, rows)) for k, v in pairs]
        state = None if self.state is None else tuple(s.index_select(1, index) for s in self.state)
        if not same_sources:
            cross = pick(self.cross_kv, index)
        else:
            cross = self.cross_kv if sources is None else pick(self.cross_kv, sources)
        if (kv_in_place or self.kv_rows is not None) and self.self_kv and self.self_kv[0] is not None:
            rows = self.kv_rows
            if rows is None:  # so far every row's K, V are its own
                rows = torch.arange(self.self_kv[0][0].size(0), device=index.device)[:, None].expand(-1, self.position)
            return DecoderCache(self.position, self._kv_with_room(index.numel(), self.position + 1), cross, state,
                                kv_rows=rows[index])
        self_kv, spare = self._moved_self_kv(index)
        return DecoderCache(self.position, self_kv, cross, state, spare)

    def reserve(self, positions: int) -> "DecoderCache":
        """The cache with room for ``positions`` in its self-attention buffers, grown once here
        where they have less: a compiled greedy search then stores each step's keys and values
        in place, where the eager steps re-make a CPU bfloat16 cache of exact size at every step
        (:func:`~seqlab.models.attention.cache_with_room_is_faster`). A cache with room read by
        the compiled step's own loops is as fast as an exact one, and the copy was two thirds of
        its self-attention's memory traffic."""
        if not self.self_kv or self.self_kv[0] is None:
            return self
        return DecoderCache(self.position, self._kv_with_room(self.self_kv[0][0].size(0), positions, growth=1.0),
                            self.cross_kv, self.state, self.spare_kv, self.kv_rows)

    def _kv_with_room(self, rows: int, positions: int, growth: float = 1.5) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The self-attention buffers, with at least ``rows`` rows (beam search's first step has
        one per sentence) and room for ``positions``: as they are if they have both, else copied
        into larger ones, with room for ``growth`` times the positions (:func:`cache_capacity`)."""
        k0 = self.self_kv[0][0]  # (R, H, capacity, d_k)
        if k0.size(0) >= rows and k0.size(2) >= positions:
            return self.self_kv
        capacity = k0.size(2) if k0.size(2) >= positions else cache_capacity(positions, growth)

        def grown(t: torch.Tensor) -> torch.Tensor:
            buffer = t.new_empty(max(t.size(0), rows), t.size(1), capacity, t.size(3))
            buffer[: t.size(0), :, : self.position] = t[:, :, : self.position]
            return buffer

        return [(grown(k), grown(v)) for k, v in self.self_kv]

    def _moved_self_kv(self, index: torch.Tensor):
        """Self-attention K, V of rows ``index``, and the buffers to reuse at the next reorder.

        A cache with room (``MultiHeadAttention.extend``) is gathered into a spare buffer of the
        same shape, the one the previous reorder left, and the buffer it leaves becomes the next
        spare: beam search then reorders without making fresh tensors, which on CPU must be paged
        in at every step. A cache of exactly the filled size (CPU bfloat16) is gathered into
        tensors one position longer, whose last position the next step fills in place: copied
        once per beam step, not twice (a reorder here and a ``torch.cat`` there).
        """
        if self.self_kv is None or self.self_kv[0] is None:
            return self.self_kv, None
        spares = self.spare_kv or [(None, None)] * len(self.self_kv)

        def moved(t: torch.Tensor, spare: torch.Tensor | None) -> torch.Tensor:  # (N, H, ≥ position, d_k)
            size = (index.numel(), t.size(1), max(t.size(2), self.position + 1), t.size(3))
            room = spare if spare is not None and spare.shape == size else t.new_empty(size)
            torch.index_select(t[:, :, : self.position], 0, index, out=room[:, :, : self.position])
            return room

        self_kv = [(moved(k, sk), moved(v, sv)) for (k, v), (sk, sv) in zip(self.self_kv, spares)]
        keeps_room = self.self_kv[0][0].size(2) > self.position
        return self_kv, (self.self_kv if keeps_room else None)
