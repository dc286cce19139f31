"""OpenAI response bodies and stream chunks for completions and chat, logprobs included.

Pure formatting: `api.app` passes the engine's text, finish reasons and TokenLogprobs; this module decides
their JSON shape (completions: tokens/token_logprobs/top_logprobs/text_offset; chat: content[] entries with
token, logprob, bytes, top_logprobs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dsd_runtime.common.proto import dsd_pb2
from dsd_runtime.draft.speculating import GenerationStats

TokenText = Callable[[int], str]


def _byte_level_alphabet() -> dict[str, int]:
    """The inverse of byte-level BPE's byte -> printable character table (GPT-2's, used by Llama 3, SmolLM2)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


class TokenTexts:
    """Per-token text and raw bytes for logprobs (a byte-level token can be part of one UTF-8 character: its
    text is then U+FFFD, while its bytes are exact, which is why OpenAI's format carries both)."""

    _ALPHABET = _byte_level_alphabet()

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def text(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id]))

    def bytes(self, token_id: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and piece and all(c in self._ALPHABET for c in piece):
            return bytes(self._ALPHABET[c] for c in piece)
        return self.text(token_id).encode("utf-8")


@dataclass(frozen=True)
class Envelope:
    """The fields every body and chunk of one response repeats."""

    id: str
    object: str
    created: int
    model: str
    chat: bool

    def body(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "choices": choices, **extra}


def completion_logprobs(entries: Sequence[dsd_pb2.TokenLogprob], texts: TokenTexts,
                        start_offset: int = 0) -> dict[str, Any]:
    text_of = texts.text
    tokens = [text_of(e.token_id) for e in entries]
    offsets, at = [], start_offset
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [_by_text(e, text_of) for e in entries], "text_offset": offsets}


def _by_text(entry: dsd_pb2.TokenLogprob, text_of: TokenText) -> dict[str, float]:
    """The completions format keys alternatives by text: two byte tokens can share one ('\ufffd'); the more
    likely (listed first) keeps the key."""
    top: dict[str, float] = {}
    for t, v in zip(entry.top_token_ids, entry.top_logprobs, strict=True):
        top.setdefault(text_of(t), v)
    return top


def chat_logprobs(entries: Sequence[dsd_pb2.TokenLogprob], texts: TokenTexts) -> dict[str, Any]:
    def item(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": texts.text(token_id), "logprob": logprob, "bytes": list(texts.bytes(token_id))}

    content = [{**item(e.token_id, e.logprob),
                "top_logprobs": [item(t, v) for t, v in zip(e.top_token_ids, e.top_logprobs, strict=True)]}
               for e in entries]
    return {"content": content, "refusal": None}


def logprobs_field(env: Envelope, wanted: bool, entries: Sequence[dsd_pb2.TokenLogprob], texts: TokenTexts,
                   start_offset: int = 0) -> dict[str, Any] | None:
    if not wanted:
        return None
    return chat_logprobs(entries, texts) if env.chat else completion_logprobs(entries, texts, start_offset)


def choice(env: Envelope, index: int, text: str, finish_reason: str | None,
           logprobs: dict[str, Any] | None) -> dict[str, Any]:
    if env.chat:
        return {"index": index, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": logprobs, "finish_reason": finish_reason}
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def chunk_choice(env: Envelope, index: int, text: str | None, finish_reason: str | None,
                 logprobs: dict[str, Any] | None, role: bool = False) -> dict[str, Any]:
    if env.chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    return {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}


def usage(prompt_tokens: int, completion_tokens: int, stats: Sequence[GenerationStats] = ()) -> dict[str, Any]:
    """OpenAI's usage, plus `dsd`: how the request's tokens were made (its choices summed), an extension
    clients ignore (docs/api.md)."""
    body: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                            "total_tokens": prompt_tokens + completion_tokens}
    if stats:
        body["dsd"] = speculation(stats)
    return body


def speculation(stats: Sequence[GenerationStats]) -> dict[str, Any]:
    """The draft's rounds and the target-only steps of a request, per position as the servers' counters."""
    windows: dict[int, int] = {}
    for st in stats:
        for k, n in st.self_steps_by_window.items():
            windows[k] = windows.get(k, 0) + n
    sources: dict[str, int] = {}
    for st in stats:
        for k, n in st.tokens_by_source.items():
            sources[k] = sources.get(k, 0) + n
    return {
        "rounds": sum(st.rounds for st in stats),
        "proposed_tokens": sum(st.proposed for st in stats),
        "accepted_tokens": sum(st.accepted for st in stats),
        "accepted_by_position": _positions(st.accepted_per_position for st in stats),
        "reached_by_position": _positions(st.reached_per_position for st in stats),
        "tokens_by_source": dict(sorted(sources.items())),
        "target_only_tokens": sum(st.target_only_tokens for st in stats),
        "target_only_steps_by_window": {str(k): windows[k] for k in sorted(windows)},
        "self_accepted_by_position": _positions(st.self_accepted_per_position for st in stats),
        "self_reached_by_position": _positions(st.self_reached_per_position for st in stats),
    }


def _positions(rows: Iterable[Sequence[int]]) -> list[int]:
    """Element-wise sum, trailing zeros dropped."""
    total: list[int] = []
    for row in rows:
        total.extend([0] * (len(row) - len(total)))
        for i, v in enumerate(row):
            total[i] += v
    while total and not total[-1]:
        total.pop()
    return total


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
