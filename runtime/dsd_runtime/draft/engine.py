"""A draft server's engine: one draft model, one target client, shared window control and metrics.

Turns text requests into token generation (Speculator) and back into text, with stop strings, usage counts
and cancellation. Used by the HTTP API and by `dsd generate`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry

from dsd_runtime.common import models, tokenization
from dsd_runtime.common.batching import BatchingLM
from dsd_runtime.common.detokenizing import IncrementalText
from dsd_runtime.common.proto import dsd_pb2
from dsd_runtime.common.tls import ClientTls
from dsd_runtime.draft import persisting
from dsd_runtime.draft.client import LinkEmulation, TargetClient
from dsd_runtime.draft.drafting import DraftingState
from dsd_runtime.draft.speculating import GenerationRequest, GenerationStats, Speculator
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_runtime.errors import InvalidRequest
from dsd_runtime.metrics import DraftMetrics
from dsd_spec.sampling import SamplingParams

log = logging.getLogger(__name__)


@dataclass
class TextRequest:
    prompt_ids: list[int]
    max_tokens: int
    params: SamplingParams
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class TextChunk:
    text: str
    finish_reason: str | None = None
    # One per output token whose text this chunk completes (with TextRequest.logprobs).
    logprobs: list[dsd_pb2.TokenLogprob] = field(default_factory=list)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    stats: GenerationStats
    seconds: float
    logprobs: list[dsd_pb2.TokenLogprob] = field(default_factory=list)


class DraftEngine:
    def __init__(self, draft: models.LoadedModel, target_address: str, window: WindowConfig,
                 link: LinkEmulation | None = None, target_deadline_s: float = 30.0,
                 registry: CollectorRegistry | None = None, served_model_name: str | None = None,
                 tls: ClientTls | None = None, window_stats: Path | None = None) -> None:
        self.draft = draft
        self.client = TargetClient(target_address, link, target_deadline_s, tls)
        self.window = WindowController(window, has_model=draft.lm is not None)
        self.registry = registry or CollectorRegistry()
        self.metrics = DraftMetrics(self.registry)
        self.metrics.gamma.set(window.gamma)
        self.metrics.configured_gamma.set(window.gamma)
        self.window.on_change = self._publish_window
        self.drafting = DraftingState()  # the cross-request cache of the model-free proposers
        self.target_name = ""
        self.target_max_context = draft.lm.max_context if draft.lm is not None else 2048
        self.vocab_size = draft.vocab_size  # the target's, once connected
        # Concurrent requests' draft steps run as one packed forward pass (continuous batching).
        self.batcher = BatchingLM(draft.lm, on_pass=lambda seqs, _t, _s: self.metrics.batch_sequences.observe(seqs)
                                  ) if draft.lm is not None else None
        self.speculator = Speculator(self.batcher, self.client, self.window, self.metrics, self.drafting,
                                     self.target_max_context)
        self.served_model_name = served_model_name
        self.ready = threading.Event()  # set while the target is connected and SERVING (see TargetMonitor)
        # Used for parameters a request omits (OpenAI's defaults until the runtime config sets others).
        self.sampling_defaults = SamplingParams(temperature=1.0)
        # The target's, once connected: generation stops at any of these ids; chat uses its template.
        self.eos_token_ids = frozenset(draft.eos_token_ids)
        self.chat_template = draft.chat_template
        # Window statistics kept across restarts (draft.persisting): read once the target's name is known.
        self.window_stats = window_stats
        self.restored_stats: persisting.SavedWindowStats | None = None
        self._stats_read = False

    def _publish_window(self, config: WindowConfig) -> None:
        self.metrics.configured_gamma.set(config.gamma)
        if config.policy == "static":
            self.metrics.gamma.set(config.gamma)

    def set_link(self, link: LinkEmulation) -> None:
        """A new emulated link for the next calls (the client reads it per call)."""
        self.client.link = link

    def set_sampling_defaults(self, params: SamplingParams) -> None:
        self.sampling_defaults = params

    def connect(self, timeout_s: float = 60.0) -> None:
        """Waits for the target, then refuses an incompatible pair (different tokenizers); ready afterwards."""
        self.handshake(timeout_s)
        self.ready.set()

    def handshake(self, timeout_s: float) -> None:
        """Reads the target's identity (context, EOS ids, chat template) and checks the pair is compatible."""
        info = self.client.info(timeout_s)
        draft_vocab = self.draft.lm.vocab_size if self.draft.lm is not None else info.vocab_size
        tokenization.check_compatible(self.draft.name, self.draft.tokenizer_fingerprint, draft_vocab,
                                      info.model_name, info.tokenizer_fingerprint, info.vocab_size)
        self.target_name = info.model_name
        own = self.draft.lm.max_context if self.draft.lm is not None else info.max_context
        self.target_max_context = min(info.max_context, own)
        self.speculator.max_context = self.target_max_context
        self.speculator.max_window = info.max_window or self.speculator.max_window
        self.speculator.target_self_drafting = frozenset(info.self_drafting)
        self.vocab_size = info.vocab_size
        self.eos_token_ids = frozenset(info.eos_token_ids) or frozenset(self.draft.eos_token_ids)
        self.chat_template = info.chat_template or self.draft.chat_template
        self._restore_window_stats()

    def _restore_window_stats(self) -> None:
        if self.window_stats is None or self._stats_read:
            return
        self._stats_read = True
        saved = persisting.load(self.window_stats, self.draft.name, self.target_name)
        if saved is None:
            return
        try:
            self.window.restore(saved.snapshot(), persisting.PRIOR_ROUNDS)
        except ValueError as e:
            log.warning("ignoring window statistics %s: %s", self.window_stats, e)
            return
        self.restored_stats = saved
        log.info("window statistics from %s (%.0f model-drafted rounds, saved %.0f s ago)", self.window_stats,
                 saved.model_rounds, time.time() - saved.saved_at)

    def save_window_stats(self) -> None:
        """Writes what the window has measured (`window_stats`), once the target is known and anything is."""
        if self.window_stats is None or not self.target_name:
            return
        snapshot = self.window.snapshot()
        if snapshot.wait_s:
            persisting.save(self.window_stats, self.draft.name, self.target_name, snapshot)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of `messages` under the target's chat template, ready for the assistant's answer."""
        tok = self.draft.tokenizer
        ids = tok.apply_chat_template(messages, chat_template=self.chat_template or None,
                                      add_generation_prompt=True, tokenize=True, return_dict=False)
        return list(ids["input_ids"] if isinstance(ids, dict) else ids)

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.target_name or self.draft.name

    def check_length(self, prompt_tokens: int, max_tokens: int) -> None:
        if prompt_tokens + max_tokens > self.target_max_context:
            raise InvalidRequest(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's context "
                f"length of {self.target_max_context} tokens", "max_tokens", "context_length_exceeded")

    def stream(self, req: TextRequest, cancel: threading.Event, stats: GenerationStats) -> Iterator[TextChunk]:
        """Yields text deltas; the last chunk carries the finish reason ('stop' or 'length')."""
        self.check_length(len(req.prompt_ids), req.max_tokens)
        tokenizer = self.draft.tokenizer
        eos = self.eos_token_ids
        gen_req = GenerationRequest(req.prompt_ids, req.max_tokens, req.params,
                                    req.seed if req.seed is not None else secrets.randbits(48), eos,
                                    req.logprobs, req.top_logprobs)
        logprobs: list[dsd_pb2.TokenLogprob] = []
        sent_logprobs = 0  # logprobs[:sent_logprobs] went out with earlier chunks
        out_ids: list[int] = []
        text = IncrementalText(tokenizer)
        emitted = ""
        held = max((len(s) for s in req.stop), default=0)  # hold back text that could start a stop string
        start = time.perf_counter()
        last = start
        finish = "length"
        self.metrics.active_requests.inc()
        try:
            for tok in self.speculator.generate(gen_req, cancel, stats, logprobs):
                now = time.perf_counter()
                (self.metrics.ttft if not out_ids else self.metrics.itl).observe(now - last)
                last = now
                self.metrics.tokens_generated.inc()
                if tok in eos:
                    finish = "stop"
                    break
                out_ids.append(tok)
                current = text.append(tok)  # complete characters only
                for s in req.stop:
                    cut = current.find(s, max(0, len(emitted) - len(s)))
                    if cut != -1:
                        yield TextChunk(current[len(emitted):cut], "stop", logprobs[sent_logprobs:len(out_ids)])
                        return
                safe = len(current) - held if held else len(current)
                if safe > len(emitted):
                    yield TextChunk(current[len(emitted):safe], None, logprobs[sent_logprobs:len(out_ids)])
                    sent_logprobs = len(out_ids)
                    emitted = current[:safe]
            # One logprob per completion token: a final EOS token is not part of the text, nor of its logprobs.
            yield TextChunk(text.finish()[len(emitted):], finish, logprobs[sent_logprobs:len(out_ids)])
        finally:
            stats.completion_tokens = len(out_ids)
            self.metrics.active_requests.dec()
            self.drafting.cache.add([*req.prompt_ids, *out_ids])  # the target's own text: future drafts

    def complete(self, req: TextRequest, cancel: threading.Event | None = None) -> Completion:
        stats = GenerationStats()
        start = time.perf_counter()
        parts, finish = [], "length"
        logprobs: list[dsd_pb2.TokenLogprob] = []
        for chunk in self.stream(req, cancel or threading.Event(), stats):
            parts.append(chunk.text)
            logprobs.extend(chunk.logprobs)
            finish = chunk.finish_reason or finish
        return Completion("".join(parts), len(req.prompt_ids), stats.completion_tokens,
                          finish, stats, time.perf_counter() - start, logprobs)

    def close(self) -> None:
        self.save_window_stats()
        self.client.close()
        if self.batcher is not None:
            self.batcher.close()
