"""The distilled draft: a frequent-token head that proposes only inside its subset, and `distill` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from dsd_runtime import distilling
from dsd_runtime.common import lm, models


def test_a_vocabulary_head_scores_only_its_tokens_and_matches_the_full_head_there(loaded, tiny_models):
    full, subset = loaded["target"].lm, loaded["subset"].lm
    assert subset.head is not None and full.head is None
    ids = loaded["target"].tokenizer("The quick brown fox")["input_ids"]
    want = full.forward(full.new_sequence(), ids)  # [n, vocab]
    got = subset.forward(subset.new_sequence(), ids)
    inside = subset.head.token_ids
    outside = torch.ones(subset.vocab_size, dtype=torch.bool)
    outside[inside] = False
    torch.testing.assert_close(got[:, inside], want[:, inside])
    assert bool((got[:, outside] == torch.finfo(torch.float32).min).all())
    probs = torch.softmax(got, dim=-1)
    assert bool((probs[:, outside] == 0).all()) and not torch.isnan(probs).any()
    assert bool(torch.isin(got.argmax(-1), inside).all())


def test_a_head_that_does_not_fit_the_model_is_refused(tiny_models, tmp_path):
    import shutil

    shutil.copytree(tiny_models["subset"], tmp_path / "bad")
    models.save_vocabulary_head(tmp_path / "bad", lm.VocabularyHead(torch.tensor([0, 1]), torch.zeros(2, 7)))
    with pytest.raises(models.ModelNotFound, match="does not fit"):
        models.load(str(tmp_path / "bad"))


def test_frequent_tokens_keep_the_end_ids_then_order_by_frequency_then_by_id():
    answers = [[5, 5, 5, 7, 7, 9], [7, 5]]
    assert distilling.frequent_tokens(answers, 12, 4, always=[11]).tolist() == [5, 7, 9, 11]
    assert distilling.frequent_tokens(answers, 12, 6, always=[11]).tolist() == [0, 1, 5, 7, 9, 11]


def test_the_loss_prefers_the_targets_distribution():
    rows = torch.tensor([[[0, 1, -1]]])  # the target's top 3: head rows 0 and 1, the third outside the head
    batch = {"soft_rows": rows, "soft_probs": torch.tensor([[[0.6, 0.3, 0.1]]]), "hard": torch.tensor([[0]])}
    matching = torch.log(torch.tensor([[[0.66, 0.33, 0.01]]]))
    wrong = torch.log(torch.tensor([[[0.01, 0.33, 0.66]]]))
    assert distilling.distillation_loss(matching, batch) < distilling.distillation_loss(wrong, batch)


def test_distill_trains_a_draft_that_loads_with_its_head_and_reports_its_curve(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("DSD_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(distilling, "EVAL_PROMPTS", distilling.EVAL_PROMPTS[:4])
    progress: list[tuple[str, str, float]] = []
    result = distilling.distill(str(tiny_models["target"]), tmp_path / "draft", num_layers=1, train_minutes=0.05,
                                max_new_tokens=12, num_prompts=24, batch_size=4, head_tokens=64, top_k=4,
                                eval_every_minutes=0.02, progress=lambda *p: progress.append(p))
    meta = json.loads((tmp_path / "draft" / "dsd-distill.json").read_text())
    assert meta["head_tokens"] == 64 and meta["num_layers"] == 1
    assert len(meta["curve"]) >= 3 and meta["curve"][-1]["steps"] > meta["curve"][0]["steps"] == 0
    assert 0 <= result.unseen_agreement <= 1 and result.cost_ratio > 0
    assert {stage for stage, _, _ in progress} == {"target generations", "training"}
    draft = models.load(str(tmp_path / "draft"))
    assert draft.lm.head is not None and len(draft.lm.head.token_ids) == 64
    assert draft.lm.model.config.num_hidden_layers == 1
    assert draft.tokenizer_fingerprint == models.load(str(tiny_models["target"])).tokenizer_fingerprint
    # A second run reuses the cached generations and soft labels: no generation stage.
    progress.clear()
    distilling.distill(str(tiny_models["target"]), tmp_path / "again", num_layers=1, train_minutes=0.01,
                       max_new_tokens=12, num_prompts=24, batch_size=4, head_tokens=64, top_k=4,
                       progress=lambda *p: progress.append(p))
    assert {stage for stage, _, _ in progress} == {"training"}
    # More prompts: only the new ones are generated.
    progress.clear()
    distilling.distill(str(tiny_models["target"]), tmp_path / "more", num_layers=1, train_minutes=0.01,
                       max_new_tokens=12, num_prompts=30, batch_size=4, head_tokens=64, top_k=4,
                       progress=lambda *p: progress.append(p))
    assert [detail for stage, detail, _ in progress if stage == "target generations"][-1] == "6/6"


def test_the_training_prompts_take_every_family_in_turn_and_none_is_an_evaluation_prompt():
    prompts = distilling.training_prompts(2600, seed=0)
    assert len(set(prompts)) == 2600 and not set(prompts) & set(distilling.EVAL_PROMPTS)
    assert prompts[:len(distilling.PROMPTS)] == distilling.PROMPTS
    families = distilling.prompt_families()
    assert len(families) == 6
    first_turns = prompts[len(distilling.PROMPTS):][:60]
    assert [sum(p in set(family) for p in first_turns) for family in families.values()] == [10] * 6
    # 2600 = the hand-written prompts, every prompt of the five smaller families, and the rest from subjects.
    assert all(set(family) <= set(prompts) for name, family in families.items() if name != "subject")


def test_a_subset_of_families_keeps_each_familys_seeded_order():
    """Adding a family must not reorder the others: cached generations and earlier training sets stay valid."""
    three = distilling.training_prompts(1400, seed=0, families=("subject", "how-to", "writing"))
    every = distilling.training_prompts(10**6, seed=0)
    assert set(three) <= set(every)
    for name in ("subject", "how-to", "writing"):
        family = set(distilling.prompt_families()[name])
        assert [p for p in three if p in family] == [p for p in every if p in family][:sum(p in family for p in three)]
