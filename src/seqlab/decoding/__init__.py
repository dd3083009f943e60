"""Decoding: autoregressive search over any encoder-decoder model (greedy and beam)."""

from seqlab.decoding.search import Hypothesis, beam_search, greedy_search, search

__all__ = ["Hypothesis", "beam_search", "greedy_search", "search"]
