"""Metrics move after a request; a client that disconnects mid-stream cancels work on both sides."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.waiting import wait_for


def _samples(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


def test_metrics_move_after_a_request(api):
    before = _samples(api.base_url)
    r = httpx.post(f"{api.base_url}/v1/completions", json={"prompt": "Hello", "max_tokens": 12, "temperature": 0},
                   timeout=30)
    assert r.status_code == 200
    after = _samples(api.base_url)
    for name in ("dsd_tokens_generated_total", "dsd_draft_tokens_proposed_total", "dsd_speculation_rounds_total",
                 "dsd_verify_rtt_seconds_count", "dsd_time_to_first_token_seconds_count",
                 "dsd_draft_step_seconds_count"):
        assert after[name] > before.get(name, 0.0), name
    assert after["dsd_requests_total{code=200,endpoint=/v1/completions}"] >= 1
    assert after["dsd_gamma"] >= 1
    assert "dsd_draft_tokens_accepted_per_position_total{position=1}" in after


def test_disconnecting_mid_stream_cancels_generation_and_closes_the_target_session(api):
    # A seeded request that runs long enough to be interrupted (the tiny model often stops early).
    for seed in range(5, 25):
        body = {"prompt": "Once", "max_tokens": 400, "temperature": 0.9, "seed": seed}
        full = httpx.post(f"{api.base_url}/v1/completions", json=body, timeout=60).json()["usage"][
            "completion_tokens"]
        if full > 100:
            break
    assert full > 100, "no seed in 5..24 gives a long enough request"
    generated = api.engine.metrics.tokens_generated
    before = generated._value.get()
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{api.base_url}/v1/completions",
            json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # got a first chunk: hang up
    active = api.engine.metrics.active_requests
    wait_for(lambda: active._value.get() == 0, 30, "generation cancelled (no active requests)")
    assert generated._value.get() - before < full / 2, "generation ran on after the client left"
    wait_for(lambda: len(api.engine_target.servicer.store) == 0, 10, "target session closed")


def test_concurrent_requests_share_the_draft_models_forward_passes(api):
    """The draft server batches too: n choices draft concurrently, their model steps packed into shared passes."""
    before = _samples(api.base_url)
    r = httpx.post(f"{api.base_url}/v1/completions", timeout=60,
                   json={"model": "tiny", "prompt": "Once upon a time", "max_tokens": 16, "n": 6, "temperature": 0})
    assert r.status_code == 200
    texts = {c["text"] for c in r.json()["choices"]}
    assert len(texts) == 1  # greedy: every choice is the target alone's answer
    after = _samples(api.base_url)
    passes = after["dsd_draft_batch_sequences_count"] - before.get("dsd_draft_batch_sequences_count", 0)
    sequences = after["dsd_draft_batch_sequences_sum"] - before.get("dsd_draft_batch_sequences_sum", 0)
    assert passes > 0 and sequences / passes > 1.5
