"""A model's classifier: found one way (timm's ``get_classifier()``), and started at zero for fine-tuning."""

from __future__ import annotations

from torch import nn


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
