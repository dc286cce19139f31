"""Tiny real models (built locally, loaded with from_pretrained) and a real gRPC target on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dsd_runtime.common import models, tiny
from dsd_runtime.target.server import TargetServer, TargetSettings


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """target; drafts: same (identical weights), partial (perturbed head), random (unrelated), subset (the same
    as the target, with an output head over every other token: a frequent-token head)."""
    root = tmp_path_factory.mktemp("tiny-models")
    target = tiny.build_tiny_model(root / "target", seed=1)
    return {
        "target": target,
        "same": tiny.build_tiny_model(root / "same", seed=1),
        "partial": tiny.build_tiny_model(root / "partial", seed=2, base=target, perturb=0.25),
        "random": tiny.build_tiny_model(root / "random", seed=3, hidden=32, layers=1),
        "subset": tiny.copy_with_vocabulary_head(target, root / "subset", list(range(0, 260, 2))),
    }


@pytest.fixture(scope="session")
def loaded(tiny_models: dict[str, Path]) -> dict[str, models.LoadedModel]:
    torch.set_num_threads(1)
    return {name: models.load(str(path)) for name, path in tiny_models.items()}


def start_target(model: models.LoadedModel, **settings: object) -> TargetServer:
    server = TargetServer(model, TargetSettings(**settings), "127.0.0.1:0")  # type: ignore[arg-type]
    server.start()
    return server


@pytest.fixture
def target_server(loaded: dict[str, models.LoadedModel]) -> Iterator[TargetServer]:
    server = start_target(loaded["target"])
    yield server
    server.stop(0)


@pytest.fixture
def held_model(loaded):
    """The target's forward passes wait at a gate until the test opens it: the model is 'busy'."""
    lm = loaded["target"].lm
    gate, entered = threading.Event(), threading.Event()
    real = lm.forward_many

    def gated(items):
        entered.set()
        gate.wait(30)
        return real(items)

    lm.forward_many = gated
    yield gate, entered
    gate.set()
    del lm.forward_many
