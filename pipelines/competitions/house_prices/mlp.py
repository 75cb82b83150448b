"""A small MLP regressor for the strong house-prices preset, trained through the shared loop.

A scikit-learn estimator around ``models.create_model("mlp")`` and ``pipelines.core.training.Trainer``, so
it runs on a GPU when there is one (bit-reproducible fp32 on CPU under a seed) and drops into the same
CV, stack and refit as every other model. Inputs are the preset's per-fold feature matrix; the target
is centred and scaled on the rows passed to ``fit`` only.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data


class MLPRegressor(RegressorMixin, BaseEstimator):
    """One hidden layer (``hidden`` units, dropout), AdamW with warmup + cosine, MSE, ``epochs`` epochs."""

    def __init__(self, hidden: int = 128, dropout: float = 0.1, epochs: int = 60, lr: float = 3e-3,
                 weight_decay: float = 1e-2, batch_size: int = 64, seed: int = 0):
        self.hidden, self.dropout, self.epochs, self.lr = hidden, dropout, epochs, lr
        self.weight_decay, self.batch_size, self.seed = weight_decay, batch_size, seed

    def fit(self, X, y):
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset

        from models import create_model
        from pipelines.core.training import Trainer, warmup_cosine

        X, y = validate_data(self, X, y, y_numeric=True)
        X, y = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.float32)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std() or 1.0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: more threads only spin on a shared CPU
        try:
            generator = torch.Generator().manual_seed(self.seed)
            torch.manual_seed(self.seed)
            net = create_model("mlp", in_features=X.shape[1], num_classes=1, hidden=(self.hidden,),
                               dropout=self.dropout)
            target = torch.tensor((y - self.y_mean_) / self.y_scale_).reshape(-1, 1)
            loader = DataLoader(TensorDataset(torch.tensor(X), target), batch_size=self.batch_size, shuffle=True,
                                drop_last=len(X) > self.batch_size, generator=generator)
            optimizer = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            steps = self.epochs * len(loader)
            trainer = Trainer(net, optimizer, nn.MSELoss(), scheduler=warmup_cosine(optimizer, steps // 20, steps),
                              grad_clip=1.0, amp=False)
            trainer.fit(loader, self.epochs)
        finally:
            torch.set_num_threads(threads)
        self.trainer_ = trainer
        return self

    def predict(self, X):
        import torch
        from torch.utils.data import DataLoader

        check_is_fitted(self)
        X = np.asarray(validate_data(self, X, reset=False), dtype=np.float32)
        out = self.trainer_.predict(DataLoader(torch.tensor(X), batch_size=4096))
        return out.numpy().ravel() * self.y_scale_ + self.y_mean_
