"""Recurrent networks written from their equations, and classifiers that read an image row by row.

The cells follow PyTorch's formulation (not d2l's GRU, which applies the reset gate before the
recurrent product), with the same gate order (GRU r, z, n; LSTM i, f, g, o) and parameter shapes as
``torch.nn.GRU``/``LSTM``, so weights load across and the tests check equal outputs and gradients.
Input projections for the whole sequence are one matrix product; only the recurrence loops in time.
Init: Gaussian N(0, 0.01^2) weights and zero biases, as in d2l's from-scratch RNNs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models._registry import register_model

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class _Cell(nn.Module):
    """Shared parameters: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H), ``bias_ih``, ``bias_hh``."""

    num_gates = 1

    def __init__(self, input_size: int, hidden_size: int, sigma: float = 0.01):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        gates = self.num_gates * hidden_size
        self.weight_ih = nn.Parameter(torch.randn(gates, input_size) * sigma)
        self.weight_hh = nn.Parameter(torch.randn(gates, hidden_size) * sigma)
        self.bias_ih = nn.Parameter(torch.zeros(gates))
        self.bias_hh = nn.Parameter(torch.zeros(gates))

    def zero_state(self, batch: int, like: torch.Tensor) -> State:
        return like.new_zeros(batch, self.hidden_size)

    @staticmethod
    def hidden(state: State) -> torch.Tensor:
        """The part of the state that is the cell's output."""
        return state

    def forward(self, x: torch.Tensor, state: State | None = None) -> State:
        """One time step on ``x`` (B, I), like ``torch.nn.GRUCell``."""
        state = self.zero_state(len(x), x) if state is None else state
        return self.step(F.linear(x, self.weight_ih, self.bias_ih), state)

    def step(self, gi: torch.Tensor, state: State) -> State:
        """One time step given the already projected input ``gi`` = W_ih x + b_ih."""
        raise NotImplementedError


class RNNCell(_Cell):
    """h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""

    def step(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(gi + F.linear(h, self.weight_hh, self.bias_hh))


class GRUCell(_Cell):
    """r, z = sigmoid(...); n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) * n + z * h."""

    num_gates = 3

    def step(self, gi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h


class LSTMCell(_Cell):
    """i, f, o = sigmoid(...); g = tanh(...); c' = f * c + i * g; h' = o * tanh(c'). State is (h, c)."""

    num_gates = 4

    def zero_state(self, batch: int, like: torch.Tensor) -> State:
        return like.new_zeros(batch, self.hidden_size), like.new_zeros(batch, self.hidden_size)

    @staticmethod
    def hidden(state: State) -> torch.Tensor:
        return state[0]

    def step(self, gi: torch.Tensor, state: State) -> State:
        h, c = state
        i, f, g, o = (gi + F.linear(h, self.weight_hh, self.bias_hh)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _Recurrent(nn.Module):
    """A stack of ``num_layers`` recurrent layers, each optionally bidirectional, with torch's API.

    ``forward(x, state=None) -> (output, h_n)`` (LSTM: ``(output, (h_n, c_n))``); x is (T, B, I), or
    (B, T, I) with ``batch_first``; states are (num_layers * D, B, H) ordered layer-major, forward
    direction first, as in torch. Layer l > 0 reads both directions of layer l - 1, concatenated.
    ``cells[l * D + d]`` holds layer l, direction d.
    """

    cell_cls: type[_Cell] = RNNCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.hidden_size, self.num_layers, self.batch_first, self.dropout = (
            hidden_size, num_layers, batch_first, dropout
        )
        self.num_directions = 2 if bidirectional else 1
        self.cells = nn.ModuleList(
            self.cell_cls(input_size if layer == 0 else hidden_size * self.num_directions, hidden_size)
            for layer in range(num_layers)
            for _ in range(self.num_directions)
        )

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if self.batch_first:
            x = x.transpose(0, 1)
        states = self._unstack(state, x)
        finals = []
        for layer in range(self.num_layers):
            outputs = []
            for d in range(self.num_directions):
                k = layer * self.num_directions + d
                y, final = self._run(self.cells[k], x.flip(0) if d else x, states[k])
                outputs.append(y.flip(0) if d else y)
                finals.append(final)
            x = torch.cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout)
        if self.batch_first:
            x = x.transpose(0, 1)
        if isinstance(finals[0], tuple):
            return x, (torch.stack([h for h, _ in finals]), torch.stack([c for _, c in finals]))
        return x, torch.stack(finals)

    @staticmethod
    def _run(cell: _Cell, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        gi = F.linear(x, cell.weight_ih, cell.bias_ih)  # every time step's input projection at once
        hs = []
        for t in range(len(x)):
            state = cell.step(gi[t], state)
            hs.append(cell.hidden(state))
        return torch.stack(hs), state

    def _unstack(self, state: State | None, x: torch.Tensor) -> list[State]:
        if state is None:
            return [cell.zero_state(x.shape[1], x) for cell in self.cells]
        if isinstance(state, tuple):
            return list(zip(state[0].unbind(0), state[1].unbind(0), strict=True))
        return list(state.unbind(0))


class RNN(_Recurrent):
    """Elman RNN with tanh, stacked and bidirectional like ``torch.nn.RNN``."""

    cell_cls = RNNCell


class GRU(_Recurrent):
    """Gated recurrent unit, stacked and bidirectional like ``torch.nn.GRU``."""

    cell_cls = GRUCell


class LSTM(_Recurrent):
    """Long short-term memory, stacked and bidirectional like ``torch.nn.LSTM``."""

    cell_cls = LSTMCell


class RowClassifier(nn.Module):
    """Reads an image as a sequence of rows (each row's pixels and channels one input vector) and
    classifies from the last layer's final hidden state (both directions when bidirectional).

    The image is first average-pooled to ``img_size`` x ``img_size``, so any input size works and the
    sequence stays ``img_size`` steps long on CPU (a no-op for images already that size).
    """

    def __init__(
        self,
        layer_cls: type[_Recurrent],
        num_classes: int = 10,
        in_chans: int = 3,
        img_size: int = 32,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(img_size)
        self.rnn = layer_cls(img_size * in_chans, hidden_size, num_layers, bidirectional, True, dropout)
        self.head = nn.Linear(hidden_size * self.rnn.num_directions, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.pool(x).permute(0, 2, 3, 1).flatten(2)  # (B, rows, width * channels)
        _, state = self.rnn(rows)
        h_n = state[0] if isinstance(state, tuple) else state
        last = h_n[-self.rnn.num_directions:]  # the top layer's directions, (D, B, H)
        return self.head(last.transpose(0, 1).flatten(1))


_CFG = dict(input_size=(1, 32, 32), min_input_size=(1, 1, 1))  # rows are pooled to img_size


@register_model(**_CFG)
def rnn_classifier(num_classes: int = 10, in_chans: int = 3, **kwargs) -> nn.Module:
    """Tanh RNN over image rows; kwargs: img_size, hidden_size, num_layers, bidirectional, dropout."""
    return RowClassifier(RNN, num_classes, in_chans, **kwargs)


@register_model(**_CFG)
def gru_classifier(num_classes: int = 10, in_chans: int = 3, **kwargs) -> nn.Module:
    """GRU over image rows; kwargs: img_size, hidden_size, num_layers, bidirectional, dropout."""
    return RowClassifier(GRU, num_classes, in_chans, **kwargs)


@register_model(**_CFG)
def lstm_classifier(num_classes: int = 10, in_chans: int = 3, **kwargs) -> nn.Module:
    """LSTM over image rows; kwargs: img_size, hidden_size, num_layers, bidirectional, dropout."""
    return RowClassifier(LSTM, num_classes, in_chans, **kwargs)
