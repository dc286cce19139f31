"""float32 linear layers on a CPU through oneDNN, their weights reordered once at load.

Why: aten runs a float32 `nn.Linear` on a CPU through MKL's sgemm, which handles 2-17 rows, the shapes of verify
windows and batched decode steps, little better than one matrix-vector product per row: on SmolLM2-135M (2
threads) a 3-token verify cost 1.8x a 1-token step. oneDNN's inner product over a weight reordered for its
kernels costs about the same for 1 to 17 rows and less at 1 row too (whole forward: 1 token 72 -> 48 ms,
3 tokens 129 -> 53 ms; bench/pass_bench.py). It is the kernel torch.compile's CPU freezing path emits
(`torch.ops.mkldnn._linear_pointwise`); used here directly, without compiling anything. Inference only: a packed
layer has no gradient, so models built for training (distilling) are never packed.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_ROWS_HINT = 64  # the row count the weight is reordered for; measured best for 1-17 rows and prefill chunks


def supported(dtype: torch.dtype, device: torch.device) -> bool:
    """float32 on a CPU whose torch has oneDNN (bfloat16 already runs through oneDNN in aten)."""
    return (device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PrepackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's blocked layout (a buffer: not a parameter, not trainable)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with torch.no_grad():
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(
                weight.detach().contiguous(), _ROWS_HINT))
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())

    @classmethod
    def of(cls, linear: nn.Linear) -> PrepackedLinear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        y = torch.ops.mkldnn._linear_pointwise(rows, self.packed_weight, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


def _agrees(packed: PrepackedLinear, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The packed layer computes what F.linear does, within float32 rounding (a guard against a torch whose
    private op changed meaning)."""
    x = torch.randn(3, packed.in_features, generator=torch.Generator().manual_seed(0), dtype=weight.dtype)
    want = F.linear(x, weight, bias)
    scale = float(want.abs().max()) or 1.0
    return float((packed(x) - want).abs().max()) <= 1e-4 * scale


@torch.no_grad()
def prepack_linears(model: nn.Module) -> int:
    """Replaces every float32 CPU `nn.Linear` in `model` by a PrepackedLinear; returns how many (0: unsupported).

    A weight tied to another module (the output head sharing the input embeddings) stays where it is and the
    head gets a packed copy; an untied layer's original weight is dropped with its module.
    """
    linears = [(parent, name, child) for parent in model.modules()
               for name, child in parent.named_children() if isinstance(child, nn.Linear)]
    if not linears or not supported(linears[0][2].weight.dtype, linears[0][2].weight.device):
        return 0
    first = linears[0][2]
    packed_first = PrepackedLinear.of(first)
    if not _agrees(packed_first, first.weight, first.bias):
        log.warning("oneDNN's prepacked linear disagrees with F.linear in this torch: layers left unpacked")
        return 0
    count = 0
    for parent, name, child in linears:
        if supported(child.weight.dtype, child.weight.device):
            setattr(parent, name, packed_first if child is first else PrepackedLinear.of(child))
            count += 1
    return count
