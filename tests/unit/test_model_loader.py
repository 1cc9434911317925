"""ModelLoader: lazy, cached, thread-safe, and retried a while after a failed load."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.errors import ModelUnavailable
from shared.model import ModelLoader, loading
from shared.model.loading import RETRY_FAILED_LOAD_S
from tests.python_snippets import run_python
from tests.waiting import wait_until


class FakeLoad:
    """Stands in for `load_model`: fails the first `failures` calls, then returns a model."""

    def __init__(
        self, failures: int = 0, delay_s: float = 0.0, release: threading.Event | None = None
    ) -> None:
        self.failures = failures
        self.delay_s = delay_s
        self.release = release  # when given, each load waits for it instead of delay_s
        self.calls: list[str] = []
        self.model = object()
        self._lock = threading.Lock()

    def __call__(self, uri: str):
        with self._lock:
            self.calls.append(uri)
            failing = len(self.calls) <= self.failures
        if self.release is not None:
            self.release.wait(timeout=10)
        else:
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


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_load_answers_for_itself_a_while_and_is_then_tried_again():
    load = FakeLoad(failures=1)
    clock = _Clock()
    loader = ModelLoader("var/models/default", load=load, clock=clock)

    with pytest.raises(ModelUnavailable, match="fake storage is down"):
        loader.get()
    clock.now += RETRY_FAILED_LOAD_S - 0.1
    with pytest.raises(ModelUnavailable, match="fake storage is down"):
        loader.get()  # at once, without loading again
    assert len(load.calls) == 1
    clock.now += 0.1
    model = loader.get()

    assert model is load.model
    assert len(load.calls) == 2


def test_a_remembered_failure_keeps_no_callers_frames_alive():
    # Raised again as the same object, it gathered every caller's frames in its
    # traceback, and with them each request's body, until the next load attempt.
    loader = ModelLoader("var/models/default", load=FakeLoad(failures=1), clock=_Clock())
    raised = []
    for _ in range(3):
        try:
            loader.get()
        except ModelUnavailable as error:
            raised.append(error)

    assert len({id(error) for error in raised}) == 3
    assert {str(error) for error in raised} == {"fake storage is down"}


def test_get_fails_while_the_model_cannot_load_and_serves_it_once_it_does():
    load = FakeLoad(failures=2)
    clock = _Clock()
    loader = ModelLoader("var/models/default", load=load, clock=clock)

    readiness = []
    for _ in range(4):
        try:
            loader.get()
            readiness.append(True)
        except ModelUnavailable:
            readiness.append(False)
        clock.now += RETRY_FAILED_LOAD_S

    assert readiness == [False, False, True, True]
    assert len(load.calls) == 3


def test_callers_queued_behind_a_failing_load_fail_with_it_instead_of_loading_in_turn():
    load = FakeLoad(failures=100, delay_s=0.2)
    loader = ModelLoader("var/models/default", load=load)

    def outcome(_: int) -> str:
        try:
            loader.get()
        except ModelUnavailable as error:
            return str(error)
        return "loaded"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(outcome, range(4)))

    assert outcomes == ["fake storage is down"] * 4
    assert len(load.calls) == 1


def test_a_caller_waits_for_another_threads_load_only_so_long(monkeypatch):
    monkeypatch.setattr(loading, "LOAD_WAIT_S", 0.05)
    # The first load goes on until released, however slowly this thread gets to its get().
    load = FakeLoad(release=threading.Event())
    loader = ModelLoader("var/models/default", load=load)

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(loader.get)
        wait_until(lambda: load.calls, timeout_s=5, what="the first load", poll_interval_s=0.001)
        try:
            with pytest.raises(ModelUnavailable, match="still loading"):
                loader.get()
        finally:
            load.release.set()
        assert first.result(timeout=5) is load.model


def test_loaded_never_starts_a_load():
    load = FakeLoad()
    loader = ModelLoader("var/models/default", load=load)

    assert loader.loaded() is None and load.calls == []
    loader.get()
    assert loader.loaded() is load.model


def test_concurrent_first_gets_share_one_load():
    load = FakeLoad(delay_s=0.05)
    loader = ModelLoader("var/models/default", load=load)

    with ThreadPoolExecutor(max_workers=8) as pool:
        models = list(pool.map(lambda _: loader.get(), range(16)))

    assert all(model is load.model for model in models)
    assert len(load.calls) == 1


def test_a_loader_of_a_missing_directory_says_how_to_make_the_model(tmp_path):
    loader = ModelLoader(str(tmp_path / "absent"))

    with pytest.raises(ModelUnavailable, match="make model"):
        loader.get()


def test_once_a_load_failed_callers_do_not_queue_behind_the_next_attempt():
    release = threading.Event()
    calls = []

    def load(uri: str):
        calls.append(uri)
        if len(calls) == 2:
            release.wait(10)  # the next attempt, held until the caller has its answer
        raise ModelUnavailable("fake storage is down")

    clock = _Clock()
    loader = ModelLoader("var/models/default", load=load, clock=clock)
    with pytest.raises(ModelUnavailable):
        loader.get()
    clock.now += RETRY_FAILED_LOAD_S

    with ThreadPoolExecutor(max_workers=1) as pool:
        retrying = pool.submit(loader.get)
        wait_until(
            lambda: len(calls) >= 2, timeout_s=5, what="the second attempt", poll_interval_s=0.001
        )
        with pytest.raises(ModelUnavailable, match="fake storage is down"):
            loader.get()
        # Answered while the attempt in progress is still held.
        assert not retrying.done()
        release.set()
        with pytest.raises(ModelUnavailable):
            retrying.result(timeout=5)

    assert len(calls) == 2


def test_a_failure_answers_for_itself_no_longer_than_the_callers_retry_wait():
    load = FakeLoad(failures=1)
    clock = _Clock()
    loader = ModelLoader("var/models/default", load=load, clock=clock, retry_failed_load_s=0.5)
    with pytest.raises(ModelUnavailable):
        loader.get()

    clock.now += 0.5

    assert loader.get() is load.model


def test_wiring_a_process_imports_no_scikit_learn_until_a_model_is_loaded():
    # async_predict, moderation_result and the relay never score an ad: each new worker
    # of theirs used to spend 1.5-3 s of its first request importing scikit-learn.
    script = (
        "import sys; from shared.bootstrap import build_services;"
        " from shared.settings import Settings;"
        " services = build_services(Settings(database_url='postgresql://x@127.0.0.1:1/x',"
        " kafka_bootstrap_servers='127.0.0.1:1'));"
        " before = sorted(m for m in ('sklearn', 'skops', 'pandas') if m in sys.modules);"
        " services.model.get();"
        " print(before, 'sklearn' in sys.modules); services.close()"
    )
    wired = run_python(script)

    assert wired.returncode == 0, wired.stderr
    assert wired.stdout.split() == ["[]", "True"]
