import pytest
import torch
from torch import nn

from seqlab.models.rnn import ElmanRNN, make_rnn, run_rnn


def copy_into_ours(ours: ElmanRNN, ref: nn.RNNBase) -> None:
    """torch.nn keeps two biases (b_ih, b_hh); our W_x carries their sum for the Elman cell and LSTM,
    and the GRU keeps b_hh inside W_h, as its candidate state needs r ⊙ (h W_hn + b_hn)."""
    with torch.no_grad():
        for layer, cell in enumerate(ours.cells):
            w_ih, w_hh = getattr(ref, f"weight_ih_l{layer}"), getattr(ref, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(ref, f"bias_ih_l{layer}"), getattr(ref, f"bias_hh_l{layer}")
            cell.W_x.weight.copy_(w_ih)
            cell.W_h.weight.copy_(w_hh)
            if cell.W_h.bias is None:
                cell.W_x.bias.copy_(b_ih + b_hh)
            else:
                cell.W_x.bias.copy_(b_ih)
                cell.W_h.bias.copy_(b_hh)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_hand_written_cells_equal_torch_nn(cell):
    torch.manual_seed(0)
    ref = make_rnn(cell, 5, 7, num_layers=2)
    ours = ElmanRNN(5, 7, num_layers=2, cell=cell)
    copy_into_ours(ours, ref)
    x = torch.randn(3, 6, 5)
    ref_out, ref_final = run_rnn(ref, x)
    out, final = ours(x)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    for a, b in zip(final, ref_final):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_elman_cell_is_the_lecture_equation():
    torch.manual_seed(0)
    rnn = ElmanRNN(3, 4)
    cell = rnn.cells[0]
    x = torch.randn(1, 2, 3)
    h1 = torch.tanh(x[0, 0] @ cell.W_x.weight.T + cell.W_x.bias)  # h_1 = tanh(x_1 W_x + b)
    h2 = torch.tanh(x[0, 1] @ cell.W_x.weight.T + h1 @ cell.W_h.weight.T + cell.W_x.bias)
    out, (h,) = rnn(x)
    torch.testing.assert_close(out[0], torch.stack([h1, h2]))
    torch.testing.assert_close(h[0, 0], h2)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_changes_no_state(cell):
    """A short sequence padded in a batch ends in the same state, and gives the same outputs, as alone."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    lengths = mask.sum(1)
    junk = x.clone()
    junk[1, 3:] = 100.0  # whatever sits in the padding must not matter
    ours = ElmanRNN(5, 7, num_layers=2, cell=cell)
    fast = make_rnn(cell, 5, 7, num_layers=2)
    for run in (lambda inp, m: ours(inp, m), lambda inp, m: run_rnn(fast, inp, m.sum(1))):
        out, final = run(junk, mask)
        alone_out, alone_final = run(x[1:, :3], mask[1:, :3])
        torch.testing.assert_close(out[1:, :3], alone_out, atol=1e-6, rtol=1e-5)
        assert torch.all(out[1, 3:] == 0)
        for a, b in zip(final, alone_final):
            torch.testing.assert_close(a[:, 1:], b, atol=1e-6, rtol=1e-5)
    assert lengths.tolist() == [6, 3]
