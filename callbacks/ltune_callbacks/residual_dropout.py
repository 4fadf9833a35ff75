"""LIMA's residual dropout (Zhou et al., NeurIPS 2023): dropout on each sublayer's output before the residual add,
rising linearly over the layers from 0.0 at the bottom to ``p_max`` at the top (0.3 for 65B, 0.2 for smaller).

    ltune fit --config configs/recipes/lima.yaml
"""

from __future__ import annotations

import lightning as L
import torch

from ltune.forward import unwrap


def residual_dropout_rates(num_layers: int, p_max: float) -> list[float]:
    """p_l = p_max * l / (L - 1) for l = 0 .. L-1 (a single layer gets p_max)."""
    if num_layers == 1:
        return [p_max]
    return [p_max * i / (num_layers - 1) for i in range(num_layers)]


class ResidualDropout(L.Callback):
    """Adds dropout to the output of every decoder layer's attention and MLP (before the residual add), through
    forward hooks, with the rate rising linearly over the layers. Active only in training mode.

    Args:
        p_max: Rate of the top layer (LIMA: 0.3; 0.2 for smaller models).
    """

    def __init__(self, p_max: float = 0.3) -> None:
        self.p_max = p_max
        self.handles: list = []
        self.rates: list[float] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.attach(pl_module.model)

    def attach(self, model: torch.nn.Module) -> None:
        """Register the hooks on a causal LM whose decoder has ``layers`` with ``self_attn`` and ``mlp`` (Llama,
        Mistral, Qwen)."""
        self.detach()
        layers = unwrap(model).get_decoder().layers
        self.rates = residual_dropout_rates(len(layers), self.p_max)
        for layer, p in zip(layers, self.rates):
            for sub in (layer.self_attn, layer.mlp):
                self.handles.append(sub.register_forward_hook(_hook(p)))

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.detach()


def _hook(p: float):
    def hook(module, inputs, output):
        if not module.training or p == 0.0:
            return output
        if isinstance(output, tuple):
            return (torch.nn.functional.dropout(output[0], p, True), *output[1:])
        return torch.nn.functional.dropout(output, p, True)

    return hook
