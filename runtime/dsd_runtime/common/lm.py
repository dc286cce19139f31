"""A causal LM with explicit per-sequence KV: one packed forward over the new tokens of many sequences.

Many sequences (sessions) are served by ONE forward pass: their new tokens are packed into a single row
(no padding: the projections and MLPs, most of a step's cost on a CPU, run once over every token), each
token carries its own position, and attention runs per sequence against that sequence's own KV buffers.
The KV of a sequence is a contiguous buffer per layer that grows geometrically, so attention reads it in
place (a paged layout would gather blocks into a contiguous tensor every layer, which costs as much memory
traffic as the attention itself on a CPU). Rolling back rejected drafts only lowers a length: nothing is
copied, and a forward that fails midway leaves every sequence exactly as it was (its length is raised only
after the whole pass succeeded), which is what makes a verification round transactional.

The attention runs through transformers' attention interface (`ALL_ATTENTION_FUNCTIONS`), so every decoder
that uses it (Llama, Qwen2, Mistral, ...) works; calls without a packing plan fall through to SDPA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from dsd_runtime.common.prepacked import PrepackedLinear

PACKED_ATTENTION = "dsd_packed"
_GROWTH_QUANTUM = 64  # KV capacity is a multiple of this many positions


def head_rows(rows: int, dtype: torch.dtype, device: torch.device) -> int:
    """How many rows to project onto the vocabulary when `rows` are wanted (the extra rows are repeats, dropped).

    float32 on a CPU: the vocabulary projection of 2-3 (6-7, 10-11) rows takes a slower kernel than 4 (8, 12)
    rows, so those are padded up to the next multiple of 4 (SmolLM2's 49,152 x 576 head, 2 threads: 3 rows
    15.8 ms, 4 rows 8.4 ms; bench/pass_bench.py). One row, other dtypes and GPUs are left alone.
    """
    if device.type != "cpu" or dtype != torch.float32 or rows > 12 or rows % 4 < 2:
        return rows
    return rows + 4 - rows % 4


@dataclass(eq=False)  # a cache is one sequence's state: identity, never compared by its tensors
class KVSequence:
    """One sequence's KV cache: per layer a key and a value buffer [kv_heads, capacity, head_dim].

    `length` positions are valid; buffers are allocated on the first write and grow geometrically.
    """

    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[1] if self.keys and self.keys[0] is not None else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (allocated capacity, not just `length`): what memory accounting counts."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values) if t is not None)

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stores `key`/`value` [kv_heads, n, head_dim] after the valid positions of `layer`; returns the
        layer's keys and values including them ([kv_heads, length + n, head_dim] views)."""
        while len(self.keys) <= layer:
            self.keys.append(None)
            self.values.append(None)
        n = key.shape[1]
        end = self.length + n
        buf_k, buf_v = self.keys[layer], self.values[layer]
        if buf_k is None or buf_k.shape[1] < end:
            capacity = -(-max(end, 2 * (buf_k.shape[1] if buf_k is not None else 0)) // _GROWTH_QUANTUM)
            shape = (key.shape[0], capacity * _GROWTH_QUANTUM, key.shape[2])
            new_k = key.new_empty(shape)
            new_v = value.new_empty(shape)
            if buf_k is not None and self.length:
                new_k[:, : self.length] = buf_k[:, : self.length]
                new_v[:, : self.length] = buf_v[:, : self.length]
            self.keys[layer], self.values[layer] = buf_k, buf_v = new_k, new_v
        buf_k[:, self.length:end] = key
        buf_v[:, self.length:end] = value
        return buf_k[:, :end], buf_v[:, :end]


@dataclass(frozen=True)
class ForwardItem:
    """New tokens for one sequence; `keep_last`: how many of the last positions' logits to return."""

    seq: KVSequence
    token_ids: Sequence[int]
    keep_last: int = 1


@dataclass(frozen=True)
class _Segment:
    seq: KVSequence
    start: int  # offset of this sequence's tokens in the packed row
    stop: int
    mask: torch.Tensor | None  # [n, length + n] causal mask of the new block; None for one token


@dataclass(frozen=True)
class _PackingPlan:
    segments: tuple[_Segment, ...]
    expand_kv: bool = False  # SDPA's own grouped-query path (expands K/V): only to measure what grouping saves


def _packed_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                      dsd_plan: _PackingPlan | None = None, **kwargs: object) -> tuple[torch.Tensor, None]:
    """query [1, heads, T, d], key/value [1, kv_heads, T, d] over the packed row; returns [1, T, heads, d]."""
    if dsd_plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    layer = module.layer_idx
    heads, kv_heads, head_dim = query.shape[1], key.shape[1], query.shape[3]
    groups = heads // kv_heads
    outputs = []
    for seg in dsd_plan.segments:
        k_all, v_all = seg.seq.write(layer, key[0, :, seg.start:seg.stop], value[0, :, seg.start:seg.stop])
        n = seg.stop - seg.start
        # Grouped-query attention without expanding K/V: the `groups` query heads that share a KV head (heads
        # kv * groups + g, as transformers' repeat_kv orders them) become rows of one query block against it.
        if dsd_plan.expand_kv:
            outputs.append(F.scaled_dot_product_attention(
                query[:, :, seg.start:seg.stop], k_all.unsqueeze(0), v_all.unsqueeze(0), attn_mask=seg.mask,
                scale=scaling, enable_gqa=groups > 1))
            continue
        q = query[0, :, seg.start:seg.stop].reshape(kv_heads, groups * n, head_dim)
        mask = seg.mask.repeat(groups, 1) if seg.mask is not None and groups > 1 else seg.mask
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, scale=scaling)
        outputs.append(out.view(1, heads, n, head_dim))
    out = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_ATTENTION, _packed_attention)
# Calls without a plan (a plain forward over a whole sequence) build SDPA's masks.
ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, sdpa_mask)


class ForwardModel(Protocol):
    """What proposers and servers call: a CausalLM, or a BatchingLM that batches concurrent callers."""

    name: str
    vocab_size: int
    max_context: int

    def new_sequence(self) -> KVSequence: ...

    def forward(self, seq: KVSequence, token_ids: Sequence[int], keep_last: int | None = None) -> torch.Tensor: ...

    def rollback(self, seq: KVSequence, num_tokens: int) -> None: ...


@dataclass(frozen=True)
class VocabularyHead:
    """An output head over a subset of the vocabulary (a distilled draft's frequent tokens).

    The full head of a small model is most of its step (SmolLM2: a 49,152 x 576 projection, about seven decoder
    layers' worth); projecting onto the tokens the draft is ever right about cuts it. Logits outside the subset
    are the lowest finite float, so the draft proposes, samples and reports probabilities only inside it (zero
    elsewhere): the proposal distribution is exactly what it samples from, and verification stays lossless.
    """

    token_ids: torch.Tensor  # [subset] int64 ids in the full vocabulary
    weight: torch.Tensor  # [subset, hidden]
    projection: torch.nn.Module | None = field(default=None, compare=False)  # hidden @ weight.T, prepacked

    def logits(self, hidden: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """hidden [k, hidden] -> [k, vocab_size] fp32 logits."""
        sub = (hidden @ self.weight.T if self.projection is None else self.projection(hidden)).float()
        full = torch.full((hidden.shape[0], vocab_size), torch.finfo(torch.float32).min, device=hidden.device)
        full[:, self.token_ids] = sub
        return full


class CausalLM:
    def __init__(self, model: PreTrainedModel, name: str, head: VocabularyHead | None = None) -> None:
        model.config._attn_implementation = PACKED_ATTENTION
        self.model = model.eval()
        self.name = name
        self.head = head
        self.vocab_size: int = int(model.config.vocab_size)
        self.max_context: int = int(getattr(model.config, "max_position_embeddings", 2048))
        self.dtype = next(model.parameters()).dtype
        self.device = next(model.parameters()).device
        cfg = model.config
        heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        # Bytes of KV one position takes across all layers: what --max-kv-bytes budgets are counted in.
        self.kv_bytes_per_token: int = 2 * int(cfg.num_hidden_layers) * kv_heads * head_dim * itemsize
        self._dummy_mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=self.device)
        # On unless the head is prepacked (oneDNN costs the same for any few rows); off only to measure what
        # each saves (bench/pass_bench.py).
        self.pad_head_rows = not isinstance(model.get_output_embeddings(), PrepackedLinear)  # see head_rows
        self.expand_kv = False  # see _packed_attention

    def new_sequence(self) -> KVSequence:
        return KVSequence()

    def forward(self, seq: KVSequence, token_ids: Sequence[int], keep_last: int | None = None) -> torch.Tensor:
        """Appends `token_ids` to `seq` and returns their next-token logits: [len(token_ids), vocab] (fp32).

        `keep_last`: only the last k positions' logits ([k, vocab]); the vocabulary projection of a long prompt
        is a large share of a prefill, so prefills ask for the few positions they use.
        """
        keep = len(token_ids) if keep_last is None else keep_last
        return self.forward_many([ForwardItem(seq, token_ids, keep)])[0]

    @torch.inference_mode()
    def forward_many(self, items: Sequence[ForwardItem]) -> list[torch.Tensor]:
        """One packed forward over every item's new tokens; each item's [keep_last, vocab] fp32 logits.

        Each sequence may appear once. Lengths are raised only after the pass succeeded (all or nothing).
        """
        if len({id(it.seq) for it in items}) != len(items):
            raise ValueError("a sequence appears twice in one forward pass")
        ids: list[int] = []
        positions: list[int] = []
        keep_index: list[int] = []
        segments = []
        for it in items:
            n, start, past = len(it.token_ids), len(ids), it.seq.length
            if n == 0 or not 0 <= it.keep_last <= n:
                raise ValueError(f"forward over {n} tokens cannot keep the last {it.keep_last} logits")
            ids.extend(it.token_ids)
            positions.extend(range(past, past + n))
            keep_index.extend(range(start + n - it.keep_last, start + n))
            mask = None
            if n > 1:  # token i of the new block sees the past and new tokens 0..i
                mask = (torch.arange(past + n, device=self.device).unsqueeze(0)
                        <= torch.arange(past, past + n, device=self.device).unsqueeze(1))
            segments.append(_Segment(it.seq, start, start + n, mask))
        inputs = {"input_ids": self._row(ids), "position_ids": self._row(positions), "use_cache": False,
                  "attention_mask": self._dummy_mask, "dsd_plan": _PackingPlan(tuple(segments), self.expand_kv)}
        logits = None
        if keep_index:
            wanted = len(keep_index)
            if self.pad_head_rows:
                keep_index += keep_index[-1:] * (head_rows(wanted, self.dtype, self.device) - wanted)
            keep = torch.tensor(keep_index, dtype=torch.long, device=self.device)
            if self.head is None:
                logits = self.model(**inputs, logits_to_keep=keep).logits[0, :wanted].float().cpu()
            else:
                hidden = self.model.base_model(**inputs).last_hidden_state[0, keep]
                logits = self.head.logits(hidden, self.vocab_size)[:wanted].cpu()
        else:  # only prefill chunks: the pass runs for their KV and projects nothing onto the vocabulary
            self.model.base_model(**inputs)
        out: list[torch.Tensor] = []
        offset = 0
        for it in items:
            it.seq.length += len(it.token_ids)
            out.append(logits[offset: offset + it.keep_last] if logits is not None and it.keep_last
                       else torch.empty(0, self.vocab_size))
            offset += it.keep_last
        return out

    def _row(self, values: list[int]) -> torch.Tensor:
        return torch.tensor([values], dtype=torch.long, device=self.device)

    def greedy(self, prompt_ids: Sequence[int], n: int) -> list[int]:
        """The model decoding alone, greedily, with its KV cache: the baseline DSD is compared against."""
        seq = self.new_sequence()
        out: list[int] = []
        logits = self.forward(seq, prompt_ids, keep_last=1)[-1]
        for _ in range(n):
            out.append(int(logits.argmax()))
            if len(out) < n:
                logits = self.forward(seq, [out[-1]])[-1]
        return out

    @staticmethod
    def rollback(seq: KVSequence, num_tokens: int) -> None:
        """Drops the last `num_tokens` positions (rejected drafts): a length change, nothing is copied."""
        if num_tokens < 0 or num_tokens > seq.length:
            raise ValueError(f"cannot roll back {num_tokens} of {seq.length} cached tokens")
        seq.length -= num_tokens
