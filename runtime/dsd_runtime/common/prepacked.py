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

Where MKL does handle a few rows well (the 2026-12-04 AMX Xeon: a 1536 x 576 projection of 1-3 rows 119-121 us
through aten against 169-175 us packed, one thread; 4 rows 232 against 174), float32 decoder layers keep the plain
weight too and send inputs of up to `plain_rows` rows through aten. Which host is which is measured at load
(`plain_rows_for`: both kernels timed on the layer's own shape, 1-8 rows, at the process's thread count), not
assumed: the same row counts were 2.4-2.6x slower through aten on 2026-12-03's host.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_ROWS_HINT = 64  # the row count the weight is reordered for; measured best for 1-17 rows and prefill chunks
PLAIN_ROWS_ENV = "DSD_FLOAT32_PLAIN_ROWS"  # pins plain_rows for every float32 decoder layer (0: none); unset: measured
MAX_PLAIN_ROWS = 8  # row counts measured at load; larger inputs always take the packed kernel
# aten must beat the packed kernel by this factor to take a row count: a near tie keeps the packed kernel (the
# choice then does not flip with the timing noise of one load, and windows keep rounding alike).
PLAIN_MARGIN = 0.9
_TIMING_REPEATS = 5
_TIMING_BUDGET_S = 5e-4  # per (row count, kernel, repeat): enough calls of a small layer to time it
_measured: dict[tuple[tuple[int, int], torch.dtype, int], int] = {}  # (shape, dtype, threads) -> plain rows


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

    `plain_rows`: also keep W as it was and run inputs of up to that many rows (decode steps, short verify
    windows, a few sessions' batched step) through aten, which on hosts whose MKL handles few rows well is faster
    than the packed kernel (this AMX Xeon, float32, one thread: an MLP projection of one row 121 vs 175 us, a
    whole decode 17.1 vs 15.6 tok/s); costs the weight's memory twice. prepack_linears measures it for float32
    decoder layers (`plain_rows_for`); the output head stays packed (as fast at one row, faster at more: 3 rows
    5.0 vs 5.3 ms, 4 rows 5.5 vs 8.2 ms) and so does bfloat16 (packed is as fast at one row, and aten's bfloat16
    has a cliff from 1 row to 2).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, plain_rows: int = 0) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with torch.no_grad():
            self.register_buffer("packed_weight", torch.ops.mkldnn._reorder_linear_weight(
                weight.detach().contiguous(), _ROWS_HINT))
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())
        self.plain_rows = max(0, plain_rows)
        self.register_buffer("plain_weight", weight.detach() if self.plain_rows else None)

    @classmethod
    def of(cls, linear: nn.Linear, plain_rows: int = 0) -> PrepackedLinear:
        return cls(linear.weight, linear.bias, plain_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.plain_weight is not None and rows.shape[0] <= self.plain_rows:
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


def _median_seconds(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, calls: int) -> float:
    times = []
    for _ in range(_TIMING_REPEATS):
        start = time.perf_counter()
        for _ in range(calls):
            fn(x)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


@torch.no_grad()
def plain_rows_for(weight: torch.Tensor, bias: torch.Tensor | None) -> int:
    """The most rows (0..MAX_PLAIN_ROWS) up to which aten's kernel beats the packed one by PLAIN_MARGIN for every
    row count, on this host at the current thread count; measured once per shape and thread count (~0.1 s)."""
    key = (tuple(weight.shape), weight.dtype, torch.get_num_threads())
    if key in _measured:
        return _measured[key]
    packed = PrepackedLinear(weight, bias)
    plain = weight.detach()
    gen = torch.Generator().manual_seed(0)
    one = torch.randn(1, weight.shape[1], generator=gen).to(weight.dtype)
    F.linear(one, plain, bias)
    packed(one)  # first calls pick kernels
    start = time.perf_counter()
    F.linear(one, plain, bias)
    calls = max(1, int(_TIMING_BUDGET_S / max(time.perf_counter() - start, 1e-7)))
    rows = 0
    for r in range(1, MAX_PLAIN_ROWS + 1):
        x = torch.randn(r, weight.shape[1], generator=gen).to(weight.dtype)
        aten = _median_seconds(lambda v: F.linear(v, plain, bias), x, calls)
        if aten >= PLAIN_MARGIN * _median_seconds(packed, x, calls):
            break
        rows = r
    _measured[key] = rows
    return rows


def _pinned_plain_rows() -> int | None:
    value = os.environ.get(PLAIN_ROWS_ENV, "").strip()
    if not value:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        raise ValueError(f"{PLAIN_ROWS_ENV} must be a whole number of rows, got {value!r}") from None


@torch.no_grad()
def prepack_linears(model: nn.Module, plain_rows: int | None = None) -> int:
    """Replaces every float32 (or supported bfloat16) CPU `nn.Linear` in `model` by a PrepackedLinear; returns how
    many (0: unsupported).

    A weight tied to another module (the output head sharing the input embeddings) stays where it is and the
    head gets a packed copy; an untied layer's original weight is dropped with its module, except that float32
    decoder layers keep it for inputs of up to `plain_rows` rows (PrepackedLinear's): `plain_rows` None takes
    $DSD_FLOAT32_PLAIN_ROWS, else measures each layer shape (`plain_rows_for`).
    """
    if plain_rows is None:
        plain_rows = _pinned_plain_rows()
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
    chosen: dict[tuple[int, int], int] = {}
    for parent, name, child in linears:
        if supported(child.weight.dtype, child.weight.device):
            rows = 0
            if child.weight.dtype == torch.float32 and child is not head:
                rows = plain_rows if plain_rows is not None else plain_rows_for(child.weight, child.bias)
                chosen[tuple(child.weight.shape)] = rows
            setattr(parent, name, PrepackedLinear.of(child, rows))
            count += 1
    if chosen:
        log.info("float32 linear layers: inputs of up to n rows through aten, more packed: %s",
                 ", ".join(f"{o}x{i}: {n}" for (o, i), n in sorted(chosen.items())))
    return count
