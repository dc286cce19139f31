"""Tokenizer identity: a fingerprint of the vocabulary and special tokens, and the draft/target pairing check."""

from __future__ import annotations

import hashlib
import json

from transformers import PreTrainedTokenizerBase

from dsd_runtime.errors import IncompatibleModels


def fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Equal fingerprints mean token ids denote the same strings on both sides."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    payload = json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False).encode()
    return hashlib.sha256(payload).hexdigest()[:32]


def check_compatible(draft_name: str, draft_fingerprint: str, draft_vocab: int,
                     target_name: str, target_fingerprint: str, target_vocab: int) -> None:
    """Refuses a draft whose tokens would mean something else to the target."""
    if draft_fingerprint != target_fingerprint:
        raise IncompatibleModels(
            f"draft model {draft_name!r} and target model {target_name!r} use different tokenizers "
            f"(fingerprints {draft_fingerprint[:12]} vs {target_fingerprint[:12]}): a draft must share the "
            "target's tokenizer"
        )
    if draft_vocab > target_vocab:
        raise IncompatibleModels(
            f"draft model {draft_name!r} has a larger vocabulary ({draft_vocab}) than target model "
            f"{target_name!r} ({target_vocab})"
        )
