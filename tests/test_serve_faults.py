"""The server under bad input and bad clients: every malformed request is a 4xx JSON error and the server
stays up; a full queue answers 503 with Retry-After; a client that goes away cancels only its own row."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_fixtures import client, make_library, running

from engine import load_model

PROMPT = "I think that"


@pytest.fixture(scope="module")
def demo():
    return load_model("demo")


@pytest.fixture(scope="module")
def library(demo, tmp_path_factory):
    return make_library(demo, tmp_path_factory.mktemp("serve-faults-lib"))


@pytest.fixture(scope="module")
def server(demo, library):
    with running(demo, library, default_max_tokens=4) as srv:
        yield srv


@contextmanager
def slowed(loaded, seconds_per_forward: float):
    """Each forward pass sleeps, so that a request is surely still running when the test acts."""
    handle = loaded.blocks[0].register_forward_pre_hook(lambda module, args: time.sleep(seconds_per_forward))
    try:
        yield
    finally:
        handle.remove()


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.02)


def assert_alive(server) -> None:
    got = client(server).completions.create(model="demo", prompt=PROMPT, max_tokens=2)
    assert got.usage.completion_tokens == 2


def steer(**entry) -> dict:
    return {"steering": [{"vector": "love-hate", "coeff": 4, **entry}]}


BAD_REQUESTS = {
    "huge max_tokens": {"max_tokens": 10**9},
    "zero max_tokens": {"max_tokens": 0},
    "string coeff": steer(coeff="4"),
    "bool coeff": steer(coeff=True),
    "unknown vector": {"steering": [{"vector": "no-such-vector"}]},
    "layer out of range": steer(layer=99),
    "vector for another model": {"steering": [{"vector": "other"}]},
    "dot-dot in name": {"steering": [{"vector": "../love-hate"}]},
    "absolute path": {"steering": [{"vector": "/etc/passwd"}]},
    "file name": {"steering": [{"vector": "love-hate.safetensors"}]},
    "nested path": {"steering": [{"vector": "a/b/love-hate"}]},
    "backslash path": {"steering": [{"vector": "..\\love-hate"}]},
    "home path": {"steering": [{"vector": "~/love-hate"}]},
    "unknown mode": steer(mode="sideways"),
    "unknown steering key": steer(path="/etc/passwd"),
    "front mode on a direction": {"steering": [{"vector": "calm", "mode": "front"}]},
    "front vector longer than the prompt": {"prompt": "Hi", "steering": [{"vector": "long"}]},
    "too many steering entries": {"steering": [{"vector": "calm"}] * 9},
    "shorthand nan": {"model": "demo+love-hate:nan"},
    "shorthand inf": {"model": "demo+love-hate:inf"},
    "shorthand string": {"model": "demo+love-hate:lots"},
    "shorthand path": {"model": "demo+../love-hate:4"},
    "shorthand unknown": {"model": "demo+nope:4"},
    "temperature string": {"temperature": "0.5"},
    "negative temperature": {"temperature": -1},
    "top_p zero": {"top_p": 0},
    "several choices": {"n": 2},
    "negative seed": {"seed": -1},
    "five stop strings": {"stop": ["a", "b", "c", "d", "e"]},
    "empty prompt": {"prompt": ""},
    "blank prompt": {"prompt": "   "},
    "two prompts": {"prompt": ["a", "b"]},
    "token id prompt": {"prompt": [1, 2, 3]},
    "prompt over the context": {"prompt": "love " * 4000},
    "no model": {"model": None},
}


@pytest.mark.parametrize("change", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_completion_requests_get_400(server, change):
    body = {"model": "demo", "prompt": PROMPT, **change}
    reply = httpx.post(f"{server.url}/completions", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


RAW_BODIES = {
    "NaN coefficient": '{"model":"demo","prompt":"hi","steering":[{"vector":"love-hate","coeff":NaN}]}',
    "Infinity coefficient": '{"model":"demo","prompt":"hi","steering":[{"vector":"love-hate","coeff":Infinity}]}',
    "-Infinity temperature": '{"model":"demo","prompt":"hi","temperature":-Infinity}',
    "lone surrogate": '{"model":"demo","prompt":"hi \\ud800 there"}',
    "invalid UTF-8": b'{"model":"demo","prompt":"hi \xff\xfe there"}',
    "not JSON": "model=demo&prompt=hi",
    "a JSON array": '["demo", "hi"]',
    "empty body": "",
    "deep nesting": "[" * 100_000,
}


@pytest.mark.parametrize("body", list(RAW_BODIES.values()), ids=list(RAW_BODIES))
def test_malformed_bodies_get_400(server, body):
    reply = httpx.post(
        f"{server.url}/completions", content=body, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"]


def test_bad_chat_requests_and_unknown_models(server):
    url = f"{server.url}/chat/completions"
    assert httpx.post(url, json={"model": "demo", "messages": []}).status_code == 400
    assert (
        httpx.post(url, json={"model": "demo", "messages": [{"role": "wizard", "content": "x"}]}).status_code
        == 400
    )
    assert (
        httpx.post(url, json={"model": "demo", "messages": [{"role": "user", "content": " "}]}).status_code
        == 400
    )
    for model in ("gpt-4o", "Demo", "demo2+love-hate:4"):
        reply = httpx.post(url, json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 404 and "demo" in reply.json()["error"]["message"]


def test_oversized_bodies_get_413_and_never_reach_the_model(server):
    ten_mb = json.dumps({"model": "demo", "prompt": "x" * 10_000_000})
    reply = httpx.post(
        f"{server.url}/completions", content=ten_mb, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413 and reply.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit must hold for a streamed (chunked) body too
        yield b'{"model": "demo", "prompt": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    reply = httpx.post(
        f"{server.url}/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413
    assert_alive(server)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_fields = {
    "model": st.sampled_from(["demo", "demo+love-hate:4", "demo+calm:-2@1", "demo+other:1", "x"]) | _json,
    "prompt": st.text(max_size=40) | _json,
    "messages": st.lists(st.fixed_dictionaries({"role": st.text(max_size=9), "content": _json}), max_size=3),
    "max_tokens": st.integers(-5, 6) | st.sampled_from([10**6, 2**64]) | _json,
    "temperature": st.floats() | _json,
    "stop": st.lists(st.text(max_size=3), max_size=5) | _json,
    "steering": st.lists(
        st.fixed_dictionaries(
            {"vector": st.sampled_from(["love-hate", "calm", "other", "..", "/etc/passwd"]) | _json},
            optional={"coeff": st.floats() | _json, "layer": st.integers(-3, 9) | _json, "mode": _json},
        ),
        max_size=3,
    )
    | _json,
    "stream": st.booleans() | _json,
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/completions", "/chat/completions"]),
    body=st.fixed_dictionaries({}, optional=_fields),  # type: ignore[arg-type]
)
def test_fuzzed_bodies_never_break_the_server(server, path, body):
    text = json.dumps(body, allow_nan=True)
    reply = httpx.post(f"{server.url}{path}", content=text, headers={"content-type": "application/json"})
    assert reply.status_code in (200, 400, 404), reply.text
    if reply.status_code != 200:
        assert reply.json()["error"]["message"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_fuzzed_bytes_never_break_the_server(server, raw):
    reply = httpx.post(f"{server.url}/chat/completions", content=raw)
    assert reply.status_code in (400, 404), reply.text


def test_a_full_queue_answers_503_with_retry_after(demo, library):
    lock = threading.Lock()
    with running(demo, library, max_batch=1, max_queue=1, batch_window_ms=0, lock=lock) as srv:
        results: list = []

        def ask() -> None:
            results.append(client(srv).completions.create(model="demo", prompt=PROMPT, max_tokens=3))

        with lock:  # the model is busy (as with the GUI generating): the first request waits for it
            first = threading.Thread(target=ask)
            first.start()
            wait_for(lambda: len(srv.batcher.batch_sizes) == 1)
            second = threading.Thread(target=ask)
            second.start()
            wait_for(lambda: srv.batcher.queued == 1)
            reply = httpx.post(f"{srv.url}/completions", json={"model": "demo", "prompt": PROMPT})
            assert reply.status_code == 503
            assert reply.headers["retry-after"] == "1"
            assert reply.json()["error"]["type"] == "server_overloaded"
            assert srv.batcher.queued == 1  # nothing more was kept
        first.join()
        second.join()
        assert [r.usage.completion_tokens for r in results] == [3, 3]


def test_a_client_killed_mid_stream_cancels_only_its_row(demo, library):
    logs: list = []
    with running(demo, library, batch_window_ms=300, on_request=logs.append) as srv:
        kept_alone = client(srv).completions.create(
            model="demo+calm:3", prompt="Love is", max_tokens=30, temperature=0
        )
        srv.batcher.batch_sizes.clear()
        kept: list = []
        keeper = threading.Thread(
            target=lambda: kept.append(
                client(srv).completions.create(
                    model="demo+calm:3", prompt="Love is", max_tokens=30, temperature=0
                )
            )
        )
        with slowed(demo, 0.03):
            keeper.start()
            body = {
                "model": "demo+love-hate:4",
                "prompt": PROMPT,
                "max_tokens": 100,
                "temperature": 0,
                "stream": True,
            }
            with httpx.stream("POST", f"{srv.url}/completions", json=body) as reply:
                for line in reply.iter_lines():
                    if line.startswith("data: {"):
                        break  # the first token: now hang up
            keeper.join()
        wait_for(lambda: any(e.model == "demo+love-hate:4" for e in logs))
        killed = next(e for e in logs if e.model == "demo+love-hate:4")
        assert killed.finish_reason == "cancelled" and killed.completion_tokens < 30
        assert list(srv.batcher.batch_sizes) == [2]  # they did share a batch
        assert kept[0].choices[0].text == kept_alone.choices[0].text
        assert kept[0].usage.completion_tokens == 30
        assert_alive(srv)


def test_a_client_that_gives_up_waiting_cancels_its_request(demo, library):
    logs: list = []
    with running(demo, library, on_request=logs.append) as srv, slowed(demo, 0.05):
        body = {"model": "demo", "prompt": PROMPT, "max_tokens": 100, "temperature": 0}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{srv.url}/completions", json=body, timeout=0.5)
        wait_for(lambda: len(logs) == 1)
        assert logs[0].finish_reason == "cancelled" and logs[0].completion_tokens < 30


def test_closing_the_batcher_fails_waiting_requests_and_cuts_the_running_one(demo):
    from engine.generation import SamplingConfig
    from engine.generation import prompt_ids as ids_of
    from engine.serve.batcher import Batcher, Job, ServerClosingError

    lock = threading.Lock()
    batcher = Batcher(demo, max_batch=1, window_s=0, lock=lock)
    events: dict[str, list] = {"running": [], "waiting": []}

    def job(name: str) -> Job:
        sampling = SamplingConfig(temperature=0, max_new_tokens=100)
        return Job(
            ids_of(demo, PROMPT),
            [],
            sampling,
            sink=lambda kind, payload: events[name].append((kind, payload)),
        )

    with lock:
        running = batcher.submit(job("running"))
        wait_for(lambda: len(batcher.batch_sizes) == 1)  # taken, and blocked on the model's lock
        batcher.submit(job("waiting"))
        closer = threading.Thread(target=batcher.close, kwargs={"timeout": 0.2})
        closer.start()
        wait_for(lambda: events["waiting"])
        with pytest.raises(ServerClosingError):
            batcher.submit(job("waiting"))
    closer.join()
    wait_for(lambda: events["running"] and events["running"][-1][0] == "done")  # cut at its first token
    kind, error = events["waiting"][0]
    assert kind == "error" and isinstance(error, ServerClosingError)
    assert events["running"][-1][0] == "done" and running.finish_reason == "cancelled"
    assert len(running.token_ids) < 100
