"""Gamma and its bounds change at run time: through the control RPC and through the watched config file."""

from __future__ import annotations

import grpc
import pytest

from dsd_runtime.common.proto import dsd_pb2, dsd_pb2_grpc
from dsd_runtime.draft.control import ConfigWatcher, start_control_server
from dsd_runtime.draft.windowing import WindowConfig, WindowController
from dsd_spec.sampling import SamplingParams


@pytest.fixture
def control():
    window = WindowController(WindowConfig(gamma=4, gamma_min=1, gamma_max=8))
    server, port = start_control_server(window, "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield window, dsd_pb2_grpc.DraftControlStub(channel)
    channel.close()
    server.stop(0)


def test_set_window_over_grpc_applies_to_the_next_round(control):
    window, stub = control
    got = stub.SetWindow(dsd_pb2.WindowConfig(gamma=6, gamma_max=10, policy="static", pipelined=False), timeout=5)
    assert (got.gamma, got.gamma_max, got.pipelined) == (6, 10, False)
    assert window.next_gamma() == 6
    assert stub.GetWindow(dsd_pb2.GetWindowRequest(), timeout=5).gamma == 6


def test_invalid_window_is_invalid_argument_and_keeps_the_old_one(control):
    window, stub = control
    with pytest.raises(grpc.RpcError) as err:
        stub.SetWindow(dsd_pb2.WindowConfig(gamma=9, gamma_max=8, pipelined=True), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "gamma_max" in err.value.details()
    assert window.config.gamma == 4


def test_config_file_changes_are_picked_up_and_bad_files_ignored(tmp_path):
    window = WindowController(WindowConfig(gamma=4))
    path = tmp_path / "runtime.yaml"
    watcher = ConfigWatcher(path, window)
    assert not watcher.check_once()  # no file yet
    path.write_text("window:\n  gamma: 2\n  gamma_max: 6\n  policy: adaptive\n")
    assert watcher.check_once()
    assert (window.config.gamma, window.config.gamma_max, window.config.policy) == (2, 6, "adaptive")
    path.write_text("window:\n  gamma: 99\n  gamma_max: 6\n")
    assert not watcher.check_once()
    assert window.config.gamma == 2
    path.write_text("window:\n  colour: red\n")
    assert not watcher.check_once()


def test_sampling_defaults_from_the_operators_config_reach_the_callback(tmp_path):
    window = WindowController(WindowConfig(gamma=4))
    seen = []
    path = tmp_path / "runtime.yaml"
    watcher = ConfigWatcher(path, window, on_sampling=seen.append)
    path.write_text("window: {gamma: 3}\nsampling: {temperature: 0.0, top_p: 0.9, top_k: 40}\n")
    assert watcher.check_once()
    assert seen == [SamplingParams(temperature=0.0, top_k=40, top_p=0.9)] and window.config.gamma == 3
    path.write_text("window: {gamma: 3}\nsampling: {temperature: 0.0, top_p: 1.5}\n")  # invalid: nothing changes
    assert not watcher.check_once()
    assert len(seen) == 1


def test_window_controller_stops_drafting_ahead_when_windows_keep_failing():
    bad, good = WindowController(WindowConfig(gamma=4)), WindowController(WindowConfig(gamma=4))
    assert bad.draft_ahead(4)  # nothing measured yet
    for _ in range(50):
        bad.observe(4, 0, 0.010, 0.060)
        good.observe(4, 4, 0.010, 0.060)
    assert not bad.draft_ahead(4)
    assert good.draft_ahead(4)


def test_a_config_change_is_published_as_the_configured_gamma_metric(tmp_path, tiny_models):
    from prometheus_client import CollectorRegistry

    from dsd_runtime.common import models
    from dsd_runtime.draft.engine import DraftEngine

    registry = CollectorRegistry()
    tokenizer_only = models.load_tokenizer(str(tiny_models["target"]))
    engine = DraftEngine(tokenizer_only, "127.0.0.1:1", WindowConfig(gamma=4, proposer="hybrid"), registry=registry)
    path = tmp_path / "runtime.yaml"
    watcher = ConfigWatcher(path, engine.window)
    path.write_text("window:\n  gamma: 6\n")
    assert watcher.check_once()
    assert registry.get_sample_value("dsd_configured_gamma") == 6
    assert registry.get_sample_value("dsd_gamma") == 6, "a static window is the current window"
    watcher.start()
    watcher.stop()
    watcher.join(5)
    assert not watcher.is_alive(), "the watcher thread stops (its stop event must not shadow Thread._stop)"


def test_the_link_section_and_the_mode_reach_a_running_draft_and_bad_ones_are_ignored(tmp_path):
    path = tmp_path / "runtime.yaml"
    path.write_text("window: {gamma: 3, gamma_max: 3, mode: 'off'}\nlink: {delay_ms: 30}\n")
    links = []
    window = WindowController(WindowConfig(gamma=4))
    watcher = ConfigWatcher(path, window, on_link=links.append)
    assert watcher.check_once()
    assert window.config.mode == "off" and window.config.gamma_max == 3
    assert links[-1].one_way_delay_ms == 30.0
    path.write_text("window: {gamma: 2}\nlink: {delay_ms: 30, latency: 1}\n")
    assert not watcher.check_once(), "an unknown link field is refused"
    assert window.config.gamma == 3 and len(links) == 1
