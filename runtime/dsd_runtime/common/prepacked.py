"""float32 and bfloat16 linear layers on a CPU through oneDNN, their weights reordered once at load.

Why: aten runs a float32 `nn.Linear` on a CPU through MKL's sgemm, which handles 2-17 rows, the shapes of verify
windows and batched decode steps, little better than one matrix-vector product per row: on SmolLM2-135M (2
threads) a 3-token verify cost 1.8x a 1-token step. oneDNN's inner product over a weight reordered for its
kernels costs about the same for 1 to 17 rows and less at 1 row too (whole forward: 1 token 72 -> 48 ms,
3 tokens 129 -> 53 ms; bench/pass_bench.py). bfloat16 has the same cliff in aten, from 1 row to 2 (this AMX
Xeon, one thread, SmolLM2's 1536 x 576 MLP projection: 58 us for 1 row, 126 us for 2; prepacked 62 and 63 us,
91 us for 17), so on CPUs with native bfloat16 it is packed too. It is the kernel torch.compile's CPU freezing
path emits (`torch.ops.mkldnn._linear_pointwise`); used here directly, without compiling anything. Inference
only: a packed layer has no gradient, so models built for training (distilling) are never packed.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_ROWS_HINT = 64  # the row count the weight is reordered for; measured best for 1-17 rows and prefill chunks


def supported(dtype: torch.dtype, device: torch.device) -> bool:
    """float32, or bfloat16 where the CPU computes it natively (AVX-512 BF16 / AMX), on a torch with oneDNN."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if not (hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


class PrepackedLinear(nn.Module):
    """y = x W^T + b with W held in oneDNN's blocked layout (a buffer: not a parameter, not trainable).

    `single_rows_plain`: also keep W as it was and run one-row inputs (a decode step) through aten's
    matrix-vector kernel, which on hosts whose MKL handles one row well is faster than the packed kernel (this
    AMX Xeon, float32, one thread: an MLP projection 124 vs 152 us, a whole decode 17.1 vs 15.6 tok/s); costs
    the weight's memory twice. prepack_linears sets it for float32 decoder layers, not for the output head (the
    packed head is faster at one row too: 5.7 vs 7.1 ms) nor for bfloat16 (packed is as fast at one row).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, single_rows_plain: bool = False) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with torch.no_grad():
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(
                weight.detach().contiguous(), _ROWS_HINT))
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())
        self.register_buffer("plain_weight", weight.detach() if single_rows_plain else None)

    @classmethod
    def of(cls, linear: nn.Linear, single_rows_plain: bool = False) -> PrepackedLinear:
        return cls(linear.weight, linear.bias, single_rows_plain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.plain_weight is not None and rows.shape[0] == 1:
            return F.linear(x, self.plain_weight, self.bias)
        y = torch.ops.mkldnn._linear_pointwise(rows.contiguous(), self.packed_weight, self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)


def _agrees(packed: PrepackedLinear, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """The packed layer computes what F.linear does, within the dtype's rounding (a guard against a torch whose
    private op changed meaning)."""
    x = torch.randn(3, packed.in_features, generator=torch.Generator().manual_seed(0)).to(weight.dtype)
    want = F.linear(x, weight, bias).float()
    scale = float(want.abs().max()) or 1.0
    tolerance = 1e-4 if weight.dtype == torch.float32 else 2e-2
    return float((packed(x).float() - want).abs().max()) <= tolerance * scale


@torch.no_grad()
def prepack_linears(model: nn.Module) -> int:
    """Replaces every float32 (or supported bfloat16) CPU `nn.Linear` in `model` by a PrepackedLinear; returns how
    many (0: unsupported).

    A weight tied to another module (the output head sharing the input embeddings) stays where it is and the
    head gets a packed copy; an untied layer's original weight is dropped with its module, except that float32
    decoder layers keep it for one-row steps (PrepackedLinear's `single_rows_plain`).
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
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    count = 0
    for parent, name, child in linears:
        if supported(child.weight.dtype, child.weight.device):
            plain_rows = child.weight.dtype == torch.float32 and child is not head
            setattr(parent, name, PrepackedLinear.of(child, plain_rows))
            count += 1
    return count
