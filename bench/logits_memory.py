"""How much logits memory a log-prob path allocates, watched the same way for every path."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LogitsPeak(TorchDispatchMode):
    """The largest floating tensor an op returns whose last dimension is the vocabulary."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.peak = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.dim() >= 2 \
                    and tensor.shape[-1] == self.vocab:
                self.peak = max(self.peak, tensor.numel() * tensor.element_size())
        return out
