"""The operator's metrics loop on real pods: the runtime's metrics, scraped by the cluster's Prometheus, read by the
operator in its pod, turned into decisions (status, Events) and acted on (ConfigMap, scaler, node affinity).

Load comes from the test itself (bounded: a few concurrent completions through the draft's Service). Short loop
timings (5 s interval, 20 s rate window) keep the module to minutes; the decisions are the product's own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openai
import pytest

from dsd_devcluster.cluster import ClusterHandle, start_kubelet, stop_kubelet
from dsd_devcluster.prometheus import resume_prometheus, suspend_prometheus
from dsd_runtime.common import models
from tests.e2e.real_nodes.conftest import REAL_CLUSTER, port_forward, wait_node
from tests.operator.e2e.conftest import Dsd
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "loop"
INTERVAL_S = 5
EVENT_S = 30  # kopf posts Events from a background queue: one may follow the state change it reports
PARAGRAPH = ("The committee met on Tuesday to review the harbour project. It approved the budget for the new "
             "breakwater, asked the engineers for a revised schedule, and postponed the decision on the ferry "
             "terminal until the environmental survey is complete in the spring.")
# Grounded: the answer repeats the prompt, so prompt lookup and the suffix cache accept long windows.
GROUNDED = [f"{PARAGRAPH}\n\nRepeat the text above word for word.\n\n{PARAGRAPH[:40]}",
            f"Text: {PARAGRAPH}\nQuote the text exactly.\nQuote: {PARAGRAPH[:30]}"]
# Open chat: nothing to look up. Sampled (temperature 1, a fresh seed per request) so that no answer repeats:
# greedy answers to repeated prompts are exactly what the drafts' cross-request suffix cache predicts, and then
# speculation pays even over a slow link (CI saw acceptance 1.00 at 124 ms round trip).
CHAT_TEMPERATURE = 1.0
CHAT = ["Write a short poem about a lighthouse keeper who befriends a seagull.",
        "Invent a recipe for a dessert made from three unusual fruits, and explain why it works."]


def _spec() -> dict[str, Any]:
    return {"apiVersion": "dsd.dev/v1alpha1", "kind": "DSDDeployment", "metadata": {"name": NAME}, "spec": {
        # The target without a GPU request, pinned to the GPU node, so a second replica fits beside the first.
        "target": {"model": {"uri": f"builtin:{models.SMOLLM2_TARGET}"}, "resources": {"limits": {}},
                   "placement": {"nodeSelector": {"kubernetes.io/hostname": "gpu-0"}}},
        "speculation": {"gamma": 4, "gammaMin": 1, "gammaMax": 8},
        "autotune": {"intervalSeconds": INTERVAL_S, "rateWindowSeconds": 20, "minDwellSeconds": 10,
                     "probeAfterSeconds": 30, "deadbandPercent": 2, "scaleCooldownSeconds": 30,
                     "nodeGraceSeconds": 15}}}


@pytest.fixture(scope="module")
def loop(real_dsd: Dsd) -> Iterator[Dsd]:
    real_dsd.create(_spec())
    real_dsd.wait_condition(NAME, "Ready", "True", timeout_s=600)
    yield real_dsd
    real_dsd.custom.delete_namespaced_custom_object("dsd.dev", "v1alpha1", real_dsd.namespace, "dsddeployments",
                                                    NAME)


class Load:
    """`concurrency` clients sending completions of `prompts` in turn until stopped; counts answers and errors."""

    def __init__(self, port: int, prompts: list[str], concurrency: int, max_tokens: int = 48,
                 temperature: float = 0.0) -> None:
        self.client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0,
                                    timeout=120)
        self.prompts, self.max_tokens, self.temperature = prompts, max_tokens, temperature
        self.stop = threading.Event()
        self.answers, self.errors = 0, 0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)]

    def _run(self, i: int) -> None:
        n = i
        while not self.stop.is_set():
            try:
                sampled = {"seed": 1000 * i + n} if self.temperature else {}
                self.client.completions.create(model=models.SMOLLM2_TARGET, prompt=self.prompts[n % len(self.prompts)],
                                               max_tokens=self.max_tokens, temperature=self.temperature, **sampled)
                self.answers += 1
            except openai.APIError:
                self.errors += 1
                self.stop.wait(1)
            n += 1


@contextmanager
def load(dsd: Dsd, prompts: list[str], concurrency: int = 2, temperature: float = 0.0) -> Iterator[Load]:
    with port_forward(dsd.cluster, dsd.namespace, f"svc/{NAME}-draft", 8000) as port:
        running = Load(port, prompts, concurrency, temperature=temperature)
        for t in running.threads:
            t.start()
        try:
            yield running
        finally:
            running.stop.set()
            for t in running.threads:
                t.join(150)


def _status(dsd: Dsd) -> dict[str, Any]:
    return dict(dsd.get(NAME).get("status") or {})


def _speculation(dsd: Dsd) -> dict[str, Any]:
    return dict(_status(dsd).get("speculation") or {})


def _tuned_events(dsd: Dsd, text: str) -> list[str]:
    return [e.message for e in dsd.events("SpeculationTuned") if text in e.message]


def _is_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _ready_drafts(dsd: Dsd) -> list[Any]:
    return [p for p in dsd.pods(NAME, "draft") if p.metadata.deletion_timestamp is None and _is_ready(p)]


def _rolled_out(dsd: Dsd, args: list[str]) -> None:
    """Wait until the only draft pod left runs with `args` at the end of its command line, and is Ready."""
    def done() -> bool:
        pods = [p for p in dsd.pods(NAME, "draft") if p.metadata.deletion_timestamp is None]
        if len(pods) != 1 or not _is_ready(pods[0]):
            return False
        have = pods[0].spec.containers[0].args
        return have[len(have) - len(args):] == args if args else "--delay-ms" not in have

    wait_for(done, 240, f"the draft rolled out with args {args}", interval_s=1)


def test_traffic_fills_in_the_metrics_within_two_intervals(loop: Dsd):
    with load(loop, GROUNDED) as running:
        wait_for(lambda: running.answers >= 1, 120, "a first answer through the draft's Service")
        # Two loop intervals, plus Prometheus' 2 s scrape needed for a rate over two samples.
        metrics = wait_for(lambda: (_status(loop).get("metrics") or {}).get("tokensPerSecond") and
                           _status(loop)["metrics"], 2 * INTERVAL_S + 4, "status.metrics filled in", interval_s=0.5)
    assert metrics["tokensPerSecond"] > 0 and metrics["sampledAt"]
    cond = loop.condition(NAME, "MetricsAvailable")
    assert cond is not None and cond["status"] == "True", cond
    status = _status(loop)
    assert status["speculation"]["mode"] in ("speculate", "off") and status["gamma"] == status["speculation"]["gamma"]


def test_a_workload_shift_moves_the_window_and_the_mode_and_back(loop: Dsd):
    start = _speculation(loop)["gamma"]
    with load(loop, GROUNDED):  # long matches: a longer window pays
        raised = wait_for(lambda: (s := _speculation(loop)).get("gamma", 0) > start and s, 180,
                          "the loop raising the window on grounded prompts", interval_s=1)
    assert raised["reason"] == "WindowRaised" and raised["mode"] == "speculate"
    wait_for(lambda: _tuned_events(loop, "WindowRaised"), EVENT_S, "each decision is an Event", interval_s=0.5)
    config = loop.cluster.core.read_namespaced_config_map(f"{NAME}-runtime", loop.namespace).data["runtime.yaml"]
    assert f"gamma_max: {raised['gamma']}" in config, "the decision reached the runtime ConfigMap"

    # An edge link 120 ms round trip away, and open chat: speculation cannot pay; the target decodes alone.
    loop.patch_spec(NAME, {"draft": {"args": ["--delay-ms", "60"]}})
    _rolled_out(loop, ["--delay-ms", "60"])
    with load(loop, CHAT, temperature=CHAT_TEMPERATURE):
        # Up to 6 min: the loop turns speculation off only once the rounds it measured at this RTT also lose,
        # and on a busy 2-core machine those take longer to accumulate (it timed out once at 240 s in CI).
        seen: list[dict] = []

        def switched_off() -> dict | None:
            seen[:] = [_speculation(loop)]
            return seen[0] if seen[0].get("mode") == "off" else None

        try:
            off = wait_for(switched_off, 360, "the loop switching speculation off", interval_s=1)
        except AssertionError as e:  # say what the loop saw instead of "False"
            raise AssertionError(f"{e}; the loop's last decision: {seen}") from None
    assert off["reason"] == "SpeculationDoesNotPay" and "for the target alone" in off["message"]
    wait_for(lambda: _tuned_events(loop, "mode off"), EVENT_S, "the mode change's Event", interval_s=0.5)

    # The link is fast again and prompts are grounded: after probeAfterSeconds the loop speculates again and stays.
    loop.patch_spec(NAME, {"draft": {"args": []}})
    _rolled_out(loop, [])
    with load(loop, GROUNDED):
        wait_for(lambda: _speculation(loop).get("reason") == "Probing", 180, "a probe of speculation",
                 interval_s=1)
        paid = wait_for(lambda: (s := _speculation(loop)).get("reason") in ("WindowOptimal", "WindowRaised",
                                                                             "WindowLowered") and s,
                        120, "the probe paying", interval_s=1)
    assert paid["mode"] == "speculate" and paid["probeAfterSeconds"] == 0


def test_sustained_load_above_the_slo_scales_the_target_up_and_back_down(loop: Dsd):
    scaler = f"{NAME}-target"
    loop.patch_spec(NAME, {"slo": {"tpotMs": 1}, "target": {"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}})

    def replicas() -> int:
        obj = loop.custom.get_namespaced_custom_object("dsd.dev", "v1alpha1", loop.namespace, "dsdrolescalers",
                                                       scaler)
        return int(obj["spec"]["replicas"])

    with load(loop, CHAT, concurrency=4, temperature=CHAT_TEMPERATURE):
        wait_for(lambda: replicas() == 2, 180, "the target scaled to maxReplicas 2", interval_s=1)
        wait_for(lambda: len([p for p in loop.pods(NAME, "target") if _is_ready(p)]) == 2, 300,
                 "two target pods Ready", interval_s=2)
        assert replicas() == 2, "never above maxReplicas"
    wait_for(lambda: replicas() == 1, 180, "the target scaled back down without load", interval_s=1)
    wait_for(lambda: len(loop.events("Autoscaled")) >= 2, EVENT_S, "the scale-down's Event", interval_s=0.5)
    scaled = [e.message for e in loop.events("Autoscaled")]
    assert len(scaled) == 2 and "1 -> 2" in scaled[0] + scaled[1] and "2 -> 1" in scaled[0] + scaled[1], scaled
    assert (_status(loop).get("scaling") or {}).get("target", {}).get("lastScaleTime")
    loop.patch_spec(NAME, {"target": {"autoscaling": None}})


def test_drafts_leave_a_node_whose_kubelet_stopped_within_60_s(loop: Dsd):
    [draft] = _ready_drafts(loop)
    node = draft.spec.node_name
    handle = ClusterHandle.load(REAL_CLUSTER)
    assert handle is not None
    stop_kubelet(handle, node)
    try:
        moved = wait_for(lambda: [p for p in _ready_drafts(loop) if p.spec.node_name != node], 60,
                         f"a Ready draft on another edge node than {node}", interval_s=1)
        assert moved[0].spec.node_name.startswith("edge-")
        wait_for(lambda: [e for e in loop.events("DraftsMoved") if node in e.message], EVENT_S, "the move's Event",
                 interval_s=0.5)
        avoided = (_status(loop).get("placement") or {}).get("avoidedNodes") or []
        assert [a["node"] for a in avoided] == [node]
    finally:
        start_kubelet(ClusterHandle.load(REAL_CLUSTER), node)  # type: ignore[arg-type]
    wait_node(loop.cluster, node, ready=True, timeout_s=60)
    wait_for(lambda: not (_status(loop).get("placement") or {}).get("avoidedNodes"), 120,
             f"{node} released once healthy", interval_s=1)


def test_prometheus_down_keeps_the_last_decision_and_recovers(loop: Dsd):
    handle = ClusterHandle.load(REAL_CLUSTER)
    assert handle is not None
    before = _speculation(loop)
    suspend_prometheus(handle.prometheus_name)
    try:
        cond = loop.wait_condition(NAME, "MetricsAvailable", "False", timeout_s=4 * INTERVAL_S)
        assert cond["reason"] == "PrometheusUnreachable" and "keeping gamma" in cond["message"]
        after = _speculation(loop)
        assert (after["gamma"], after["mode"], after["since"]) == (before["gamma"], before["mode"], before["since"])
        wait_for(lambda: loop.events("PrometheusUnreachable"), EVENT_S, "the outage is an Event", interval_s=0.5)
    finally:
        resume_prometheus(handle.prometheus_name)
    loop.wait_condition(NAME, "MetricsAvailable", "True", timeout_s=6 * INTERVAL_S)
