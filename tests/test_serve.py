"""The OpenAI-compatible server, driven by the official `openai` client over loopback.

Steered output must equal `python main.py generate` (run in-process) with the same settings and seed, and
requests that share a batch must each get exactly what they get alone.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import torch
from serve_fixtures import client, make_library, running

from engine import ActAddError, generate, load_model
from engine.cli import main as cli_main
from engine.generation import SamplingConfig
from engine.penalties import PresencePenaltyProcessor
from engine.serve import SteeringServer, check_bind
from engine.serve.prompts import transcript
from engine.serve.schemas import ChatMessage
from engine.steering import Steer

PROMPT = "I think that"


@pytest.fixture(scope="module")
def demo():
    return load_model("demo")


@pytest.fixture(scope="module")
def library(demo, tmp_path_factory):
    return make_library(demo, tmp_path_factory.mktemp("serve-lib"))


@pytest.fixture(scope="module")
def server(demo, library):
    # A wide batch window, so that requests sent together reliably share a batch.
    with running(demo, library, batch_window_ms=300, default_max_tokens=8) as srv:
        yield srv


def cli_generate(capsys, library, *args: str) -> dict:
    code = cli_main(["generate", "--model", "demo", "--library", str(library.root), "--json", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_models_and_vectors_list_what_fits(server):
    api = client(server)
    ids = [m.id for m in api.models.list().data]
    assert ids[0] == "demo"
    assert "demo+love-hate:4" in ids and "demo+calm:4" in ids
    assert not any("other" in i for i in ids)  # captured on another model: not usable here
    listing = httpx.get(f"{server.url}/steering/vectors").json()
    by_id = {v["id"]: v for v in listing["data"]}
    assert set(by_id) == {"love-hate", "long", "calm"}
    assert by_id["love-hate"]["default_mode"] == "front" and by_id["calm"]["default_mode"] == "all"
    assert by_id["love-hate"]["layers"] == [2] and by_id["love-hate"]["shorthand"] == "demo+love-hate:4"


@pytest.mark.parametrize(
    ("cli_args", "request_args"),
    [
        ([], {}),
        (["--steer", "love-hate:4"], {"model": "demo+love-hate:4"}),
        (["--steer", "love-hate:-3"], {"extra_body": {"steering": [{"vector": "love-hate", "coeff": -3}]}}),
        (
            ["--steer", "calm:6", "--steer", "love-hate:2@1", "--mode", "all"],
            {
                "extra_body": {
                    "steering": [
                        {"vector": "calm", "coeff": 6, "mode": "all"},
                        {"vector": "love-hate", "coeff": 2, "layer": 1, "mode": "all"},
                    ]
                }
            },
        ),
    ],
    ids=["unsteered", "shorthand", "field", "composed"],
)
def test_completion_equals_cli_generate(server, library, capsys, cli_args, request_args):
    sampled = ["--temperature", "0.9", "--top-p", "0.8", "--seed", "5", "--frequency-penalty", "0.5"]
    expected = cli_generate(
        capsys, library, "--prompt", PROMPT, "--max-new-tokens", "12", *sampled, *cli_args
    )
    got = client(server).completions.create(
        model=request_args.get("model", "demo"),
        prompt=PROMPT,
        max_tokens=12,
        temperature=0.9,
        top_p=0.8,
        seed=5,
        frequency_penalty=0.5,
        extra_body=request_args.get("extra_body"),
    )
    assert got.choices[0].text == expected["text"]
    assert got.usage.completion_tokens == len(expected["token_ids"]) == 12
    assert got.usage.prompt_tokens == len(expected["prompt_token_ids"])
    assert got.choices[0].finish_reason == "length"


def test_steering_changes_the_text(server):
    api = client(server)
    plain = api.completions.create(model="demo", prompt=PROMPT, max_tokens=12, temperature=0)
    steered = api.completions.create(model="demo+love-hate:8", prompt=PROMPT, max_tokens=12, temperature=0)
    assert plain.choices[0].text != steered.choices[0].text


def test_presence_penalty_matches_cli(server, library, capsys):
    expected = cli_generate(
        capsys,
        library,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "16",
        "--temperature",
        "0",
        "--presence-penalty",
        "2",
    )
    plain = cli_generate(capsys, library, "--prompt", PROMPT, "--max-new-tokens", "16", "--temperature", "0")
    got = client(server).completions.create(
        model="demo", prompt=PROMPT, max_tokens=16, temperature=0, presence_penalty=2.0
    )
    assert got.choices[0].text == expected["text"] != plain["text"]


def test_presence_penalty_counts_a_token_once():
    scores = torch.zeros(2, 5)
    ids = torch.tensor([[9, 1, 1, 1], [9, 2, 3, 9]])  # prompt length 1, then generated tokens
    out = PresencePenaltyProcessor(0.5, prompt_length=1)(ids % 5, scores)
    assert out[0].tolist() == [0.0, -0.5, 0.0, 0.0, 0.0]
    assert out[1].tolist() == [0.0, 0.0, -0.5, -0.5, -0.5]


def test_stop_string_matches_cli(server, library, capsys):
    full = cli_generate(capsys, library, "--prompt", PROMPT, "--max-new-tokens", "12", "--temperature", "0")
    stop = full["text"][6:9]  # a string the greedy text contains
    expected = cli_generate(
        capsys, library, "--prompt", PROMPT, "--max-new-tokens", "12", "--temperature", "0", "--stop", stop
    )
    got = client(server).completions.create(
        model="demo", prompt=PROMPT, max_tokens=12, temperature=0, stop=[stop]
    )
    assert got.choices[0].text == expected["text"] == full["text"][: full["text"].find(stop)]
    assert got.choices[0].finish_reason == "stop"


def test_chat_streaming_equals_non_streaming_and_the_engine(server, demo, library):
    api = client(server)
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Tell me about rain"}]
    body = {"steering": [{"vector": "calm", "coeff": 5}]}
    whole = api.chat.completions.create(
        model="demo", messages=messages, max_tokens=10, temperature=0, extra_body=body
    )
    chunks = list(
        api.chat.completions.create(
            model="demo",
            messages=messages,
            max_tokens=10,
            temperature=0,
            extra_body=body,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 10
    assert streamed == whole.choices[0].message.content
    # The demo model has no chat template: the messages become a plain transcript.
    prompt = transcript([ChatMessage.model_validate(m) for m in messages])
    engine = generate(
        demo, prompt, [[Steer(library.load("calm"), 5.0)]], SamplingConfig(temperature=0, max_new_tokens=10)
    )
    assert whole.choices[0].message.content == engine.rows[0].text


def test_concurrent_requests_with_different_steering_share_a_batch_and_each_equal_alone(server):
    api = client(server)
    requests = [
        {"model": "demo+love-hate:6"},
        {"model": "demo", "extra_body": {"steering": [{"vector": "calm", "coeff": -4}]}},
        {"model": "demo", "max_tokens": 5},  # unsteered, and shorter: rows end on their own
    ]

    def ask(args: dict) -> tuple[str, int]:
        options = {"max_tokens": 14, "temperature": 0, **args}
        got = api.completions.create(prompt=PROMPT, **options)
        return got.choices[0].text, got.usage.completion_tokens

    alone = [ask(r) for r in requests]
    server.batcher.batch_sizes.clear()
    together: list = [None] * len(requests)

    def worker(i: int) -> None:
        together[i] = ask(requests[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(server.batcher.batch_sizes) == [3]  # one forward pass for all three
    assert together == alone
    assert len({text for text, _ in alone}) == 3 and alone[2][1] == 5


def test_sampled_requests_with_their_own_seeds_share_a_batch_and_each_equal_alone(server, capsys, library):
    """Each row samples from its own generator (engine row seeds): a seeded sampled request gives the
    same text whatever shares its batch, and the same text as `generate` with that seed."""
    api = client(server)
    requests = [
        {"model": "demo+love-hate:6", "seed": 7},
        {"model": "demo", "seed": 11, "extra_body": {"steering": [{"vector": "calm", "coeff": -4}]}},
        {"model": "demo", "seed": 7},
    ]

    def ask(args: dict) -> str:
        options = {"max_tokens": 14, "temperature": 1.0, "top_p": 0.9, **args}
        return api.completions.create(prompt=PROMPT, **options).choices[0].text

    alone = [ask(r) for r in requests]
    server.batcher.batch_sizes.clear()
    together: list = [None] * len(requests)
    threads = [
        threading.Thread(target=lambda i=i: together.__setitem__(i, ask(requests[i]))) for i in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(server.batcher.batch_sizes) == [3]  # different seeds no longer split the batch
    assert together == alone
    expected = cli_generate(
        capsys,
        library,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "14",
        "--temperature",
        "1.0",
        "--top-p",
        "0.9",
        "--seed",
        "7",
    )
    assert alone[2] == expected["text"]  # the unsteered seeded request is `generate --seed 7`


def test_tiny_random_model_streams_and_matches_the_engine(loaded_models, tmp_path):
    llama = loaded_models["llama"]
    library = make_library(llama, tmp_path / "lib", layer=1)
    with running(llama, library) as srv:
        api = client(srv)
        model = srv.model_id
        assert model == "llama" and api.models.list().data[0].id == model
        stream = api.completions.create(
            model=f"{model}+love-hate:3", prompt="Love is", max_tokens=9, temperature=0, stream=True
        )
        text = "".join(c.choices[0].text for c in stream)
    expected = generate(
        llama,
        "Love is",
        [[Steer(library.load("love-hate"), 3.0)]],
        SamplingConfig(temperature=0, max_new_tokens=9),
    )
    assert text == expected.rows[0].text


def test_api_key_guards_every_route(demo, library):
    with running(demo, library, api_key="s3cret") as srv:
        assert httpx.get(f"{srv.url}/models").status_code == 401
        wrong = httpx.get(f"{srv.url}/steering/vectors", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        post = httpx.post(f"{srv.url}/completions", json={"model": "demo", "prompt": "x"})
        assert post.status_code == 401
        got = client(srv, api_key="s3cret").completions.create(model="demo", prompt=PROMPT, max_tokens=3)
        assert got.usage.completion_tokens == 3


def test_binding_beyond_loopback_needs_an_api_key(demo, library, capsys):
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(Exception, match="API key"):
            SteeringServer(demo, library, host=host)
        check_bind(host, "key")  # allowed with a key
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind(host, None)
    code = cli_main(["serve", "--host", "0.0.0.0", "--library", str(library.root)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--api-key" in err


@contextmanager
def slowed(loaded, seconds_per_forward: float):
    """Each forward pass sleeps, so that a request is surely still running when the test acts."""
    handle = loaded.blocks[0].register_forward_pre_hook(lambda module, args: time.sleep(seconds_per_forward))
    try:
        yield
    finally:
        handle.remove()


def test_graceful_shutdown_finishes_open_requests(demo, library):
    srv = SteeringServer(demo, library, port=0)
    srv.start()
    api = client(srv)
    with slowed(demo, 0.02):
        stream = api.completions.create(
            model="demo",
            prompt=PROMPT,
            max_tokens=30,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [next(iter(stream))]
        stopper = threading.Thread(target=srv.stop)
        stopper.start()
        chunks += list(stream)
        stopper.join()
    assert stopper.is_alive() is False
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 30
    expected = generate(demo, PROMPT, None, SamplingConfig(temperature=0, max_new_tokens=30))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.rows[0].text
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{srv.bound_port}/v1/models")


def test_a_taken_port_is_a_clear_error(demo, library):
    with running(demo, library) as first:
        second = SteeringServer(demo, library, port=first.bound_port)
        with pytest.raises(ActAddError, match="in use"):
            second.start()
        assert (
            client(first)
            .completions.create(model="demo", prompt=PROMPT, max_tokens=2)
            .usage.completion_tokens
            == 2
        )


@pytest.mark.slow
def test_cli_serve_answers_and_stops_on_sigint(library, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "main.py",
            "serve",
            "--model",
            "demo",
            "--port",
            "0",
            "--library",
            str(library.root),
        ],
        cwd=Path(__file__).resolve().parent.parent,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True).start()
    try:
        line = ""
        while "serving" not in line:
            line = lines.get(timeout=120)  # the model loads, then the server prints its URL
        url = line.split(" at ")[1].split()[0]
        got = openai.OpenAI(base_url=url, api_key="x", max_retries=0).completions.create(
            model="demo+love-hate:4", prompt=PROMPT, max_tokens=3
        )
        assert got.usage.completion_tokens == 3
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
    assert code == 0
