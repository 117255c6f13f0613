"""The one contract every tellapart network follows (timm's ``forward_features``/``forward_head``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Classifier"]


class Classifier(nn.Module):
    """Image classifier split into ``features`` → ``head`` → ``classifier``.

    ``features`` maps images (N, C, H, W) to pooled or flattened features (N, D);
    ``head`` holds whatever sits between them and the logits (hidden dense layers,
    dropout; ``nn.Identity`` when nothing does); ``classifier`` is the final
    ``nn.Linear``. Fine-tuning, embeddings and export use only this contract.

    Attributes:
        num_features: D, the width of :meth:`forward_features`' output.
        num_classes: Output units of ``classifier`` (1 for a single binary logit).
        classifier: The final ``nn.Linear``; :meth:`reset_classifier` replaces it.
        default_weight_decay: Weight decay the architecture's seed recipe used, or
            None when it has no opinion; the trainer reads it.
        model_name: Registered name it was built under (set by ``create_model``).
        model_args: Keyword arguments that rebuild it with ``create_model``
            (set by ``create_model``; nanoGPT's ``model_args``).
        pretrained_mean_std: Per-channel (mean, std) of [0, 1] pixels that pretrained
            weights expect, or None; the trainer then normalises with them.
    """

    default_weight_decay: float | None = None
    pretrained_mean_std: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    model_name: str | None = None
    model_args: dict[str, Any]

    def __init__(
        self,
        *,
        features: nn.Module,
        num_features: int,
        head: nn.Module,
        head_features: int,
        num_classes: int,
    ) -> None:
        """Assembles the network.

        Args:
            features: Maps images to (N, ``num_features``).
            num_features: Width of ``features``' output.
            head: Maps (N, ``num_features``) to (N, ``head_features``).
            head_features: Width of ``head``'s output, the classifier's input.
            num_classes: Output units.
        """
        super().__init__()
        self.features = features
        self.head = head
        self.classifier = nn.Linear(head_features, num_classes)
        self.num_features = num_features
        self.num_classes = num_classes
        self.model_args = {}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) to features (N, ``num_features``)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Features to logits (N, ``num_classes``).

        Args:
            x: Output of :meth:`forward_features`.
            pre_logits: Return the classifier's input (an embedding) instead of logits.
        """
        x = self.head(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) to logits (N, ``num_classes``)."""
        return self.forward_head(self.forward_features(x))

    def decay_parameters(self) -> list[nn.Parameter]:
        """Trainable tensors the trainer applies weight decay to.

        Default: every weight matrix or kernel (ndim > 1), never biases or norm
        scales, as Keras regularises kernels only. Presets whose seed put
        ``kernel_regularizer`` on some layers only (e.g. convolutions, not Dense)
        override this so the decayed set matches the seed.
        """
        return [p for p in self.parameters() if p.requires_grad and p.ndim > 1]

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the final linear layer with a fresh one of ``num_classes`` outputs.

        The rest of the head (hidden dense layers, dropout) is kept, so this is the
        one step fine-tuning on a new label set needs.
        """
        old = self.classifier
        self.classifier = nn.Linear(
            old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype
        )
        self.num_classes = num_classes
        if self.model_args:
            # Keep the rebuild recipe true to the network it describes.
            self.model_args = {**self.model_args, "num_classes": num_classes}
