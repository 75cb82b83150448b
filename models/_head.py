"""A model's classifier: found one way (timm's ``get_classifier()``), started at zero or at a linear probe
for fine-tuning."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def get_classifier(model: nn.Module) -> nn.Module | None:
    """The classifier module by timm's ``model.get_classifier()``; ``None`` for a model without one (our
    d2l classics) or whose heads are not one module (timm's distilled models return a pair)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return head if isinstance(head, nn.Module) else None


def zero_head(model: nn.Module) -> None:
    """Start a fine-tuned model's new classifier at zero: every class equally likely, loss ln(K).

    timm initialises an EfficientNet classifier uniformly in +-1/sqrt(n_classes): with few classes and
    1280 pretrained features the first logits have a spread of 3-5, the first loss is 5-11 instead of
    ln(K), and the first epoch spends itself (and the pretrained body's features) undoing that.
    A classifier that is not one ``nn.Linear`` is left as it is.
    """
    head = get_classifier(model)
    if isinstance(head, nn.Linear):
        nn.init.zeros_(head.weight)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def fit_head(model: nn.Module, features: torch.Tensor, labels: torch.Tensor, *, label_smoothing: float = 0.0,
             weight_decay: float = 1e-3, steps: int = 100) -> bool:
    """Set a linear classifier to the softmax regression of ``labels`` on ``features`` (the model's
    pre-logits on the training rows), fitted by L-BFGS with the training loss's label smoothing and an L2
    penalty ``weight_decay`` on the weights.

    Fine-tuning from a fitted head (LP-FT, Kumar et al. 2022) starts at the linear probe's accuracy, so the
    first steps' gradients are not spent teaching a blank head what the pretrained features already say.
    Returns False (the head untouched) for a classifier that is not one ``nn.Linear``.
    """
    head = get_classifier(model)
    if not isinstance(head, nn.Linear) or head.in_features != features.shape[1]:
        return False
    x, y = features.detach().float(), labels.long()
    w = torch.zeros(head.out_features, head.in_features, device=x.device, requires_grad=True)
    b = torch.zeros(head.out_features, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = F.cross_entropy(x @ w.T + b, y, label_smoothing=label_smoothing) + weight_decay / 2 * w.square().sum()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        head.weight.copy_(w)
        if head.bias is not None:
            head.bias.copy_(b)
    return True
