"""A residual recurrent sequence classifier and its plain twin.

Stacked LSTMs/GRUs with a residual connection around each layer, as in deep recurrent translation models
(Wu et al. 2016, "Google's Neural Machine Translation System", arXiv:1609.08144; the skip idea from He et al.
2015, arXiv:1512.03385)::

    stem:   (N, T, F) -Linear-> (N, T, H)      or tokens (N, T) -Embedding-> (N, T, H)
    stages: num_layers x Residual(RecurrentLayer)   h <- h + LSTM(h)      (skip="none": h <- LSTM(h))
    head:   last time step (or mean over time) -> LayerNorm -> Linear -> (N, num_classes)

The input projection makes every recurrent layer map H features to H, so every layer can carry an identity skip.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
import torch.nn as nn

from skiplab.blocks.base import check_skip
from skiplab.blocks.wrap import Residual
from skiplab.layers.norm_act import check_positive
from skiplab.models.base import SkipNet
from skiplab.registry import register_model

CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
POOLS = ("last", "mean")
PAPER = "Wu et al. 2016, Google's Neural Machine Translation System, arXiv:1609.08144 (residual LSTM stacks)"


class RecurrentLayer(nn.Module):
    """One batch-first recurrent layer (``hidden_size -> hidden_size``) returning only its output sequence.

    The model's stages are Sequentials of blocks, so each layer hands on a tensor; the final state is not
    needed by a classifier that reads the output sequence.  (:class:`~skiplab.blocks.wrap.Residual` also wraps a
    bare ``nn.LSTM`` and passes its state through; this adapter is what lets layers stack in a Sequential.)
    """

    def __init__(self, cell: str, hidden_size: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}; got {cell!r}")
        self.rnn = CELLS[cell](hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _state = self.rnn(x)  # (N, T, H)
        return self.dropout(out)


class SequencePool(nn.Module):
    """``(N, T, H) -> (N, H)``: the last time step (``"last"``) or the mean over time (``"mean"``)."""

    def __init__(self, mode: str = "last") -> None:
        super().__init__()
        if mode not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(map(repr, POOLS))}; got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1] if self.mode == "last" else x.mean(dim=1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class RNNClassifier(SkipNet):
    """Sequence classifier: input projection, ``num_layers`` (residual) recurrent layers, pooled linear head.

    Inputs are ``(batch, time, input_size)`` floats, or with ``vocab_size`` set ``(batch, time)`` token ids.
    """

    def __init__(
        self,
        *,
        cell: str = "lstm",
        num_layers: int = 2,
        hidden_size: int = 64,
        input_size: int = 16,
        num_classes: int = 10,
        vocab_size: int | None = None,
        pool: str = "last",
        dropout: float = 0.0,
        skip: str = "residual",
    ) -> None:
        super().__init__()
        check_positive("num_layers", num_layers)
        check_positive("hidden_size", hidden_size)
        check_positive("num_classes", num_classes)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}")
        self.skip = check_skip(skip)
        self.vocab_size = vocab_size
        if vocab_size is None:
            self.in_channels = check_positive("input_size", input_size)
            self.input_ndim = 2  # (time, features) per sample
            self.stem: nn.Module = nn.Linear(input_size, hidden_size)
        else:
            self.in_channels = check_positive("vocab_size", vocab_size)
            self.input_ndim = 1  # (time,) token ids per sample
            self.stem = nn.Embedding(vocab_size, hidden_size)
        layers = OrderedDict(
            (f"layer{i + 1}", Residual(RecurrentLayer(cell, hidden_size, dropout=dropout), skip=skip))
            for i in range(num_layers)
        )
        self.stages = nn.ModuleList([nn.Sequential(layers)])
        self.head = nn.Sequential(OrderedDict([
            ("pool", SequencePool(pool)),
            ("norm", nn.LayerNorm(hidden_size)),
            ("fc", nn.Linear(hidden_size, num_classes)),
        ]))

    def check_input(self, x: torch.Tensor) -> None:
        if isinstance(x, torch.Tensor) and x.dim() == 4:  # what `skiplab train` feeds: (N, C, H, W) images
            wants = (f"token ids (batch, time) below vocab_size={self.vocab_size}" if self.vocab_size is not None
                     else f"sequences (batch, time, input_size={self.in_channels})")
            raise ValueError(
                f"rnn_classifier takes {wants}; got images of shape {tuple(x.shape)}. `skiplab train` trains on "
                "image datasets (skiplab data list), which a recurrent classifier does not read: train it from "
                "Python on sequence data, as examples/seq_mnist_bilstm_torch.py does (MNIST rows as time steps)"
            )
        if self.vocab_size is None:
            return super().check_input(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor of token ids; got {type(x).__name__}")
        if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"token input must have shape (batch, time) with batch, time > 0; got {tuple(x.shape)}")
        if x.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"token input must be int64 or int32 ids; got dtype {x.dtype}")
        if x.min() < 0 or x.max() >= self.vocab_size:
            raise ValueError(
                f"token ids must be in [0, {self.vocab_size}); got min {int(x.min())}, max {int(x.max())}"
            )


def rnn_classifier(
    cell: str = "lstm",
    num_layers: int = 2,
    hidden_size: int = 64,
    input_size: int = 16,
    num_classes: int = 10,
    *,
    vocab_size: int | None = None,
    pool: str = "last",
    dropout: float = 0.0,
    skip: str = "residual",
) -> RNNClassifier:
    """A residual LSTM/GRU/RNN classifier for ``(batch, time, input_size)`` inputs (see the module docstring)."""
    return RNNClassifier(cell=cell, num_layers=num_layers, hidden_size=hidden_size, input_size=input_size,
                         num_classes=num_classes, vocab_size=vocab_size, pool=pool, dropout=dropout, skip=skip)


# The registry key is the function name, so the public builder is registered under its own name.
register_model(rnn_classifier, family="rnn", input_size=(32, 16), skip="residual", paper=PAPER)


@register_model(family="rnn", input_size=(32, 16), skip="none", paper=PAPER)
def plain_rnn_classifier(**kwargs: Any) -> RNNClassifier:
    """The plain twin of :func:`rnn_classifier`: the same stacked layers without the residual skips."""
    if "skip" in kwargs:
        raise TypeError("plain_rnn_classifier fixes skip='none'; build rnn_classifier(skip=...) instead")
    return rnn_classifier(skip="none", **kwargs)
