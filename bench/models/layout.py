"""Shared by the torchvision-layout backbones: turning a checkpoint into the backbone's keys.

A backbone lists `dropped_prefixes` (the original classifier: `fc.`, `classifier.`,
`AuxLogits.`), removed from a checkpoint before the strict load, and `new_prefixes` (the WSOL
layers the original network lacks, e.g. VGG's conv6): when a checkpoint has none of their
keys they keep their fresh initialisation; any other absent or extra key is an error."""
from __future__ import annotations

import torch
from torch import nn


class TorchvisionLayout(nn.Module):
    dropped_prefixes: tuple[str, ...] = ()
    new_prefixes: tuple[str, ...] = ()

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = {k: v for k, v in state.items() if not k.startswith(self.dropped_prefixes)}
        if self.new_prefixes and not any(k.startswith(self.new_prefixes) for k in state):
            own = self.state_dict()
            state.update({k: v for k, v in own.items() if k.startswith(self.new_prefixes)})
        return state
