"""Incremental detokenization: the text of a growing token list at O(1) decode work per token.

Decoding the whole output after every token (what a naive stream does) is quadratic in the output length. Here
each step decodes only a short window: the tokens since the last stable point, with a few tokens before it as
context, so tokenizers that merge across token boundaries (leading spaces, multi-byte characters) still give
the same text as one full decode. Text ending in an incomplete UTF-8 sequence is held until it completes.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


class IncrementalText:
    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the context window
        self._read = 0  # tokens up to here are already in `text`
        self.text = ""

    def _decode(self, start: int, end: int | None = None) -> str:
        return str(self._tokenizer.decode(self._ids[start:end], skip_special_tokens=True))

    def append(self, token: int) -> str:
        """Adds a token; returns the stable text so far (never shrinks)."""
        self._ids.append(token)
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self._ids)
        return self.text

    def finish(self) -> str:
        """The final text, including a held tail (an incomplete character stays as the replacement mark)."""
        before = self._decode(self._prefix, self._read)
        after = self._decode(self._prefix)
        if len(after) > len(before):
            self.text += after[len(before):]
        self._prefix = self._read = len(self._ids)
        return self.text
