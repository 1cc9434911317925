"""ModelLoader: lazy, cached, thread-safe, and retried after a failed load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.errors import ModelUnavailable
from shared.model import ModelLoader


class FakeLoad:
    """Stands in for `load_model`: fails the first `failures` calls, then returns a model."""

    def __init__(self, failures: int = 0, delay_s: float = 0.0) -> None:
        self.failures = failures
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.model = object()
        self._lock = threading.Lock()

    def __call__(self, uri: str):
        with self._lock:
            self.calls.append(uri)
            failing = len(self.calls) <= self.failures
        time.sleep(self.delay_s)
        if failing:
            raise ModelUnavailable("fake storage is down")
        return self.model


def test_a_loader_loads_nothing_until_the_first_get():
    load = FakeLoad()

    ModelLoader("s3://bucket/model", load=load)

    assert load.calls == []


def test_a_loader_loads_once_and_then_serves_the_cached_model():
    load = FakeLoad()
    loader = ModelLoader("var/models/default", load=load)

    first, second = loader.get(), loader.get()

    assert first is second is load.model
    assert load.calls == ["var/models/default"]


def test_a_failed_load_raises_model_unavailable_and_is_retried_on_the_next_get():
    load = FakeLoad(failures=1)
    loader = ModelLoader("var/models/default", load=load)

    with pytest.raises(ModelUnavailable, match="fake storage is down"):
        loader.get()
    model = loader.get()

    assert model is load.model
    assert len(load.calls) == 2


def test_ready_is_false_while_the_model_cannot_load_and_true_once_it_does():
    load = FakeLoad(failures=2)
    loader = ModelLoader("var/models/default", load=load)

    readiness = [loader.ready(), loader.ready(), loader.ready(), loader.ready()]

    assert readiness == [False, False, True, True]
    assert len(load.calls) == 3


def test_concurrent_first_gets_share_one_load():
    load = FakeLoad(delay_s=0.05)
    loader = ModelLoader("var/models/default", load=load)

    with ThreadPoolExecutor(max_workers=8) as pool:
        models = list(pool.map(lambda _: loader.get(), range(16)))

    assert all(model is load.model for model in models)
    assert len(load.calls) == 1


def test_a_loader_of_a_missing_directory_is_not_ready(tmp_path):
    loader = ModelLoader(str(tmp_path / "absent"))

    ready = loader.ready()

    assert ready is False
    with pytest.raises(ModelUnavailable, match="make model"):
        loader.get()
