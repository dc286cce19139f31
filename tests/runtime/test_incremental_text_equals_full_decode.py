"""Streaming detokenization decodes a short window per token and still equals one full decode."""

from __future__ import annotations

import random

import pytest

from dsd_runtime.common import models, tiny
from dsd_runtime.common.detokenizing import IncrementalText

TEXTS = ["Hello, world! Ça va? 日本語のテキスト 🙂 and   spaces\n\nnew lines", "def f(x):\n    return x**2  # c",
         "Ünïcödé — dashes – “quotes”"]


@pytest.fixture(scope="module", params=["tiny-bytes", "smollm2"])
def tokenizer(request):
    return tiny.build_tokenizer() if request.param == "tiny-bytes" else models.load(models.SMOLLM2_TARGET).tokenizer


def _stream(tokenizer, ids: list[int], valid_utf8: bool = True) -> str:
    text, seen = IncrementalText(tokenizer), ""
    for token in ids:
        current = text.append(token)
        assert current.startswith(seen)  # only grows
        if valid_utf8:  # and emits whole characters (random ids may hold bytes that never form one)
            assert "\ufffd" not in current[len(seen):]
        seen = current
    return text.finish()


def test_real_text_streams_to_the_full_decode(tokenizer):
    for t in TEXTS:
        ids = tokenizer(t)["input_ids"]
        assert _stream(tokenizer, ids) == tokenizer.decode(ids, skip_special_tokens=True)


def test_random_token_sequences_stream_to_the_full_decode(tokenizer):
    rng = random.Random(0)
    for _ in range(30):
        ids = [rng.randrange(len(tokenizer)) for _ in range(40)]
        assert _stream(tokenizer, ids, valid_utf8=False) == tokenizer.decode(ids, skip_special_tokens=True)
