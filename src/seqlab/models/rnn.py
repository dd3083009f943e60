"""Recurrent networks (lecture §01): one cell, applied again and again along the sequence.

The Elman RNN is written out from the lecture's equations,

    h_t = tanh(x_t W_x + h_{t-1} W_h + b),        ŷ_t = h_t W_y + b_y,

and so are the LSTM (Hochreiter & Schmidhuber 1997) and GRU (Cho et al. 2014) cells, whose gates
("valves between 0 and 1") were meant to let the state carry information further. These
hand-written cells are what :mod:`seqlab.analysis` differentiates through; the models train
with ``torch.nn.RNN/LSTM/GRU`` (:func:`make_rnn`), whose fused kernels compute the same thing
(tests/models/test_rnn.py checks each against its torch.nn twin with copied weights).

Variable-length input: sequences are right-padded, and a state stops changing once its
sequence has ended (``mask``), so padding never alters the state of a shorter sequence.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# A cell's state: (h,) for the Elman RNN and the GRU, (h, c) for the LSTM; each (B, H).
State = tuple[torch.Tensor, ...]


class ElmanCell(nn.Module):
    """h_t = tanh(x_t W_x + h_{t-1} W_h + b)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.W_x = nn.Linear(input_size, hidden_size)  # carries b
        self.W_h = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, state: State) -> State:
        (h,) = state
        return (torch.tanh(self.W_x(x) + self.W_h(h)),)  # (B, H)


class LSTMCell(nn.Module):
    """i, f, g, o = σ/σ/tanh/σ(x_t W_x + h_{t-1} W_h + b);  c_t = f ⊙ c_{t-1} + i ⊙ g;  h_t = o ⊙ tanh(c_t)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.W_x = nn.Linear(input_size, 4 * hidden_size)
        self.W_h = nn.Linear(hidden_size, 4 * hidden_size)

    def forward(self, x: torch.Tensor, state: State) -> State:
        h, c = state
        i, f, g, o = (self.W_x(x) + self.W_h(h)).chunk(4, dim=-1)  # torch.nn's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # the cell: f forgets, i writes
        return torch.sigmoid(o) * torch.tanh(c), c  # (B, H), (B, H)


class GRUCell(nn.Module):
    """r, z = σ(x W + h U);  n = tanh(x W_n + r ⊙ (h U_n));  h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.W_x = nn.Linear(input_size, 3 * hidden_size)
        self.W_h = nn.Linear(hidden_size, 3 * hidden_size)

    def forward(self, x: torch.Tensor, state: State) -> State:
        (h,) = state
        xr, xz, xn = self.W_x(x).chunk(3, dim=-1)
        hr, hz, hn = self.W_h(h).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)  # reset and update gates
        n = torch.tanh(xn + r * hn)
        return ((1 - z) * n + z * h,)  # (B, H)


CELLS = {"rnn": ElmanCell, "lstm": LSTMCell, "gru": GRUCell}


def initial_state(cell: nn.Module, batch_size: int, like: torch.Tensor) -> State:
    zeros = like.new_zeros(batch_size, cell.hidden_size)
    return (zeros, zeros.clone()) if isinstance(cell, LSTMCell) else (zeros,)


def unroll(cell: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None,
           state: State | None = None) -> tuple[torch.Tensor, State]:
    """Run ``cell`` over x (B, T, E), left to right; returns every h_t (B, T, H) and the final state.

    ``mask`` (B, T) is True at real tokens: where it is False the state is carried over unchanged
    (and the output is zero), so the final state of each sequence is its state after its own last
    token, whatever the padding.
    """
    B, T, _ = x.shape
    state = initial_state(cell, B, x) if state is None else state
    outputs = []
    for t in range(T):
        new = cell(x[:, t], state)
        if mask is not None:
            keep = mask[:, t, None]  # (B, 1)
            new = tuple(torch.where(keep, n, s) for n, s in zip(new, state))
            outputs.append(new[0] * keep)
        else:
            outputs.append(new[0])
        state = new
    return torch.stack(outputs, dim=1), state  # (B, T, H), final state


class ElmanRNN(nn.Module):
    """A stack of hand-written cells with ``torch.nn.RNN``'s interface (batch first, states (L, B, H)).

    ``cell`` picks the Elman RNN, the LSTM or the GRU. Slow (a Python loop per step) but every
    intermediate h_t is an ordinary tensor: what the analysis code needs.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, cell: str = "rnn"):
        super().__init__()
        self.cells = nn.ModuleList(CELLS[cell](input_size if i == 0 else hidden_size, hidden_size)
                                   for i in range(num_layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """x: (B, T, E) → outputs of the top layer (B, T, H) and final states, each (L, B, H)."""
        finals = []
        for cell in self.cells:
            x, state = unroll(cell, x, mask)
            finals.append(state)
        return x, tuple(torch.stack(parts) for parts in zip(*finals))  # (L, B, H) per state tensor


def make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
             bidirectional: bool = False) -> nn.RNNBase:
    """The fast torch.nn layer (fused kernels) that computes the same cell: nn.RNN(tanh), nn.LSTM or nn.GRU."""
    layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
    return layer(input_size, hidden_size, num_layers, batch_first=True,
                 dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)


def run_rnn(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor | None = None,
            state: State | None = None) -> tuple[torch.Tensor, State]:
    """Run a torch.nn RNN over right-padded x (B, T, E) with per-sequence ``lengths`` (B,).

    The batch is packed, so the final state of every sequence is taken after its own last token
    and <pad> never enters the recurrence. Returns outputs (B, T, H·dirs), zero at padding, and the
    final state as a tuple of (L·dirs, B, H) tensors, (h,) or (h, c).
    """
    hx = None if state is None else (state if isinstance(rnn, nn.LSTM) else state[0])
    if lengths is None:
        out, final = rnn(x, hx)
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = rnn(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
    return out, final if isinstance(final, tuple) else (final,)
