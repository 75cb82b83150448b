"""Golden equivalence: the from-scratch RNN, GRU and LSTM layers loaded with a ``torch.nn`` layer's
weights give the same outputs, final states and gradients (inputs, initial states, every weight)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell

ATOL = 1e-5
PAIRS = [(RNN, nn.RNN), (GRU, nn.GRU), (LSTM, nn.LSTM)]


def _copy_weights(ours: nn.Module, ref: nn.Module) -> None:
    """torch names layer l, direction d as ``weight_ih_l{l}{'_reverse' if d}``; ours is ``cells[l * D + d]``."""
    with torch.no_grad():
        for k, cell in enumerate(ours.cells):
            layer, d = divmod(k, ours.num_directions)
            suffix = f"_l{layer}" + ("_reverse" if d else "")
            for pname in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, pname).copy_(getattr(ref, pname + suffix))


def _as_tuple(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def _grads_by_torch_name(ours: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for k, cell in enumerate(ours.cells):
        layer, d = divmod(k, ours.num_directions)
        for pname, p in cell.named_parameters():
            out[f"{pname}_l{layer}" + ("_reverse" if d else "")] = p.grad
    return out


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("ours_cls, ref_cls", PAIRS, ids=["rnn", "gru", "lstm"])
def test_stacked_bidirectional_layers_match_torch(ours_cls, ref_cls, batch_first: bool) -> None:
    torch.manual_seed(0)
    T, B, IN, H, L = 7, 3, 5, 6, 2
    ref = ref_cls(IN, H, num_layers=L, bidirectional=True, batch_first=batch_first)
    ours = ours_cls(IN, H, num_layers=L, bidirectional=True, batch_first=batch_first)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    _copy_weights(ours, ref)

    shape = (B, T, IN) if batch_first else (T, B, IN)
    x = torch.randn(shape)
    h0 = torch.randn(L * 2, B, H)
    c0 = torch.randn(L * 2, B, H)
    lstm = ref_cls is nn.LSTM
    results = []
    for net in (ref, ours):
        xi, hi, ci = (t.clone().requires_grad_() for t in (x, h0, c0))
        out, state = net(xi, (hi, ci) if lstm else hi)
        h_n, c_n = state if lstm else (state, None)
        # a random linear functional of every output, so each gradient path is exercised
        g = torch.Generator().manual_seed(1)
        loss = (out * torch.randn(out.shape, generator=g)).sum() + (h_n * torch.randn(h_n.shape, generator=g)).sum()
        if lstm:
            loss = loss + (c_n * torch.randn(c_n.shape, generator=g)).sum()
        loss.backward()
        results.append((out, h_n, c_n, xi.grad, hi.grad, ci.grad if lstm else None))

    (out_r, h_r, c_r, gx_r, gh_r, gc_r), (out_o, h_o, c_o, gx_o, gh_o, gc_o) = results
    assert out_o.shape == out_r.shape == ((B, T, 2 * H) if batch_first else (T, B, 2 * H))
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=0)
    torch.testing.assert_close(h_o, h_r, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx_o, gx_r, atol=ATOL, rtol=0)
    torch.testing.assert_close(gh_o, gh_r, atol=ATOL, rtol=0)
    if lstm:
        torch.testing.assert_close(c_o, c_r, atol=ATOL, rtol=0)
        torch.testing.assert_close(gc_o, gc_r, atol=ATOL, rtol=0)
    ours_grads = _grads_by_torch_name(ours)
    assert set(ours_grads) == {name for name, _ in ref.named_parameters()}
    for name, p in ref.named_parameters():
        torch.testing.assert_close(ours_grads[name], p.grad, atol=ATOL, rtol=0, msg=name)


@pytest.mark.parametrize("ours_cls, ref_cls", PAIRS, ids=["rnn", "gru", "lstm"])
def test_zero_initial_state_is_the_default(ours_cls, ref_cls) -> None:
    torch.manual_seed(0)
    ref, ours = ref_cls(4, 3, num_layers=2), ours_cls(4, 3, num_layers=2)
    _copy_weights(ours, ref)
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        (out_r, state_r), (out_o, state_o) = ref(x), ours(x)
    torch.testing.assert_close(out_o, out_r, atol=ATOL, rtol=0)
    for a, b in zip(_as_tuple(state_o), _as_tuple(state_r), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("ours_cls, ref_cls", [(RNNCell, nn.RNNCell), (GRUCell, nn.GRUCell), (LSTMCell, nn.LSTMCell)],
                         ids=["rnn", "gru", "lstm"])
def test_cells_match_torch_cells(ours_cls, ref_cls) -> None:
    torch.manual_seed(0)
    ref, ours = ref_cls(4, 3), ours_cls(4, 3)
    ours.load_state_dict(ref.state_dict())  # same parameter names and shapes as torch's cells
    x, h = torch.randn(2, 4), torch.randn(2, 3)
    state = (h, torch.randn(2, 3)) if ref_cls is nn.LSTMCell else h
    with torch.no_grad():
        got, want = ours(x, state), ref(x, state)
    for a, b in zip(_as_tuple(got), _as_tuple(want), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_dropout_between_layers_only_in_training() -> None:
    torch.manual_seed(0)
    net = GRU(4, 3, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 4)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x)[0], net(x)[0])
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x)[0], net(x)[0])
