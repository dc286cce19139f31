"""CPU linear layers through oneDNN (`dsd_runtime.common.prepacked`): the same logits as aten's, the tied
embedding untouched, float32 inputs of a few rows through aten as measured (or pinned), bfloat16 packed where the
CPU has it natively, other dtypes left alone, and `models.load` packing targets and subset heads."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM

from dsd_runtime.common import models, prepacked, tiny
from dsd_runtime.common.lm import ForwardItem
from dsd_runtime.common.prepacked import PrepackedLinear, prepack_linears


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max()))


def _tiny(dtype: torch.dtype, tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = tiny.tiny_config(300)
    cfg.tie_word_embeddings = tied
    return LlamaForCausalLM(cfg).to(dtype).eval()


def test_packed_layers_compute_what_aten_does_and_keep_the_tied_embedding():
    model = _tiny(torch.float32, tied=True)
    ids = torch.tensor([[5, 17, 250, 3, 99, 42, 7]])
    with torch.no_grad():
        want = model(ids).logits
    embedding = model.get_input_embeddings().weight.detach().clone()
    assert prepack_linears(model) == 2 * 7 + 1  # q, k, v, o, gate, up, down per layer, and the head
    assert isinstance(model.get_output_embeddings(), PrepackedLinear)
    assert torch.equal(model.get_input_embeddings().weight, embedding)
    with torch.no_grad():
        assert _close(model(ids).logits, want)


def test_float32_inputs_of_up_to_plain_rows_take_the_plain_kernel_and_longer_ones_the_packed_one():
    model = _tiny(torch.float32, tied=False)
    proj = model.model.layers[0].mlp.up_proj
    weight = proj.weight.detach().clone()
    prepack_linears(model, plain_rows=3)
    packed, head = model.model.layers[0].mlp.up_proj, model.get_output_embeddings()
    assert packed.plain_weight is not None and head.plain_weight is None  # the packed head is as fast at few rows
    with torch.no_grad():
        for rows in (1, 3):  # aten's own kernel: bit-equal
            x = torch.randn(1, rows, proj.in_features)
            assert torch.equal(packed(x), torch.nn.functional.linear(x, weight))
        window = torch.randn(1, 5, proj.in_features)
        assert _close(packed(window), torch.nn.functional.linear(window, weight))


def test_no_plain_rows_keeps_no_second_copy_of_the_weights():
    model = _tiny(torch.float32, tied=False)
    prepack_linears(model, plain_rows=0)
    assert all(m.plain_weight is None for m in model.modules() if isinstance(m, PrepackedLinear))


def test_plain_rows_are_measured_once_per_shape_or_pinned_by_the_environment(monkeypatch):
    weight = torch.randn(48, 32, generator=torch.Generator().manual_seed(1))
    rows = prepacked.plain_rows_for(weight, None)
    assert 0 <= rows <= prepacked.MAX_PLAIN_ROWS
    assert prepacked.plain_rows_for(weight.clone(), None) == rows  # cached: the same shape is not re-timed
    monkeypatch.setenv(prepacked.PLAIN_ROWS_ENV, "2")
    model = _tiny(torch.float32, tied=False)
    prepack_linears(model)
    layers = [m for m in model.modules() if isinstance(m, PrepackedLinear) and m is not model.lm_head]
    assert layers and all(m.plain_rows == 2 for m in layers)
    monkeypatch.setenv(prepacked.PLAIN_ROWS_ENV, "many")
    with pytest.raises(ValueError, match=prepacked.PLAIN_ROWS_ENV):
        prepack_linears(_tiny(torch.float32, tied=False))


def test_bfloat16_is_packed_where_the_cpu_computes_it_natively():
    model = _tiny(torch.bfloat16, tied=False)
    ids = torch.tensor([[5, 17, 250, 3, 99, 42, 7]])
    with torch.no_grad():
        want = model(ids).logits.float()
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert prepack_linears(model) == (2 * 7 + 1 if native else 0)
    with torch.no_grad():
        got = model(ids).logits.float()
    # Windows of several tokens already ran through oneDNN in aten: the packed layers round the same way.
    assert float((got - want).abs().max()) <= 2e-2 * max(1.0, float(want.abs().max()))


def test_other_dtypes_are_left_alone():
    model = _tiny(torch.float64, tied=False)
    assert prepack_linears(model) == 0
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)


def test_load_prepacks_a_float32_target_and_a_subset_head(tmp_path):
    target_dir = tiny.build_tiny_model(tmp_path / "t", seed=3, dtype=torch.float32)
    draft_dir = tiny.copy_with_vocabulary_head(target_dir, tmp_path / "d", list(range(0, 256, 3)))
    for ref in (target_dir, draft_dir):
        plain = models.load(str(ref), prepack=False).lm
        packed = models.load(str(ref), prepack=True).lm
        assert plain.pad_head_rows and not packed.pad_head_rows  # a packed head costs the same for any few rows
        assert (packed.head is None) == (plain.head is None)
        if packed.head is not None:
            assert packed.head.projection is not None
        outs = []
        for lm in (plain, packed):
            seq = lm.new_sequence()
            first = lm.forward(seq, [10, 20, 30, 40], keep_last=2)
            window = lm.forward_many([ForwardItem(seq, [1, 2, 3], 3)])[0]
            outs.append(torch.cat([first, window]))
        finite = outs[0] > torch.finfo(torch.float32).min  # a subset head's excluded tokens: the lowest float
        assert torch.equal(finite, outs[1] > torch.finfo(torch.float32).min)
        assert _close(outs[1][finite], outs[0][finite])
