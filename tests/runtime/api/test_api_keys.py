"""The OpenAI API behind bearer keys (`dsd draft --api-keys-file`): 401 in OpenAI's shape without a valid key,
the official client works with one, probes stay open, a rotated key file applies without a restart."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from dsd_runtime.api.auth import ApiKeys, parse_keys
from tests.runtime.api.conftest import ApiServer, api_server

KEY, OTHER = "sk-dsd-first", "sk-dsd-second"
BODY = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(f"# DSD API keys\n{KEY}\n\n")
    return path


@pytest.fixture(scope="module")
def keyed(loaded, keys_file: Path) -> Iterator[ApiServer]:
    with api_server(loaded["target"], loaded["partial"], api_keys=ApiKeys(keys_file)) as server:
        yield server


def _rewrite(path: Path, text: str) -> None:
    """As a Secret volume rotates: a new file swapped in by rename (new inode)."""
    tmp = path.with_name(".keys.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.parametrize("headers, reason", [
    ({}, "no API key provided"),
    ({"Authorization": "Bearer sk-wrong"}, "incorrect API key"),
    ({"Authorization": f"Basic {KEY}"}, "must be `Bearer <key>`"),
    ({"Authorization": "Bearer"}, "must be `Bearer <key>`"),
])
def test_a_request_without_a_valid_key_gets_401_in_openai_shape(keyed: ApiServer, headers, reason):
    for method, path in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        r = httpx.request(method, f"{keyed.base_url}{path}", json=BODY if method == "POST" else None,
                          headers=headers, timeout=30)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert reason in error["message"]


def test_the_openai_client_with_the_key_is_served_and_without_it_is_refused(keyed: ApiServer):
    good = openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key=KEY, max_retries=0)
    assert good.completions.create(**BODY).choices[0].text
    assert [m.id for m in good.models.list()] == ["tiny"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key="sk-wrong", max_retries=0).completions.create(**BODY)


def test_probes_and_metrics_stay_open_and_count_the_401s(keyed: ApiServer):
    httpx.get(f"{keyed.base_url}/v1/models", timeout=10)
    assert httpx.get(f"{keyed.base_url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{keyed.base_url}/readyz", timeout=10).status_code == 200
    metrics = httpx.get(f"{keyed.base_url}/metrics", timeout=10).text
    assert 'endpoint="/v1/models"' in metrics and 'code="401"' in metrics


def test_a_rotated_key_file_applies_without_a_restart_and_an_emptied_one_keeps_the_last_keys(
        keyed: ApiServer, keys_file: Path):
    def status(key: str) -> int:
        return httpx.get(f"{keyed.base_url}/v1/models", headers={"Authorization": f"Bearer {key}"},
                         timeout=10).status_code

    assert (status(KEY), status(OTHER)) == (200, 401)
    _rewrite(keys_file, f"{KEY}\n{OTHER}\n")  # overlap: both keys valid while clients move
    assert (status(KEY), status(OTHER)) == (200, 200)
    _rewrite(keys_file, f"{OTHER}\n")
    assert (status(KEY), status(OTHER)) == (401, 200)
    _rewrite(keys_file, "# mid-rotation\n")
    assert (status(KEY), status(OTHER)) == (401, 200), "an empty file must not open (or close) the API"
    _rewrite(keys_file, f"{KEY}\n")
    assert status(KEY) == 200


def test_a_key_file_without_keys_is_refused_at_start(tmp_path: Path):
    empty = tmp_path / "keys"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="no API key"):
        ApiKeys(empty)
    with pytest.raises(ValueError, match="api-keys-file"):
        ApiKeys(tmp_path / "missing")
    assert parse_keys("  a \n# b\n\nc") == ["a", "c"]
