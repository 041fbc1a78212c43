"""Serving: aggregate tok/s of N concurrent steered streams vs one stream, time to first token, memory.

    python -m bench.bench_serve            # demo model, 4 streams, 500 requests for the memory check
    python -m bench.bench_serve --quick    # the same path in well under a minute (numbers rougher)

The server is `engine.serve.SteeringServer` in its own process (as `python main.py serve` runs it, with
one torch thread); the clients are threads of this process speaking OpenAI's streaming API over loopback
(httpx, `stream: true`, `stream_options.include_usage`). Every request is steered differently from its
neighbours (love-hate, calm, unsteered, in rotation), so batched rows really carry different steering.

- **Throughput.** The same number of requests sent by one client one after another, then by N clients at
  once; aggregate completion tok/s (tokens from the usage chunk / wall time) of N streams over one.
  Interleaved A B B A over `--reps` repetitions; the median of the paired ratios. Wall-clock by nature.
- **Time to first token**, p50 and p99 over every request of the N-stream runs (send -> first text).
- **Memory.** `--requests` requests (N at a time) after a warm-up; the server's resident memory (RSS)
  is sampled through the run; its growth after the warm-up must stay under 50 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common

PROMPTS = [
    "I think that the weather in the city is going to be",
    "The team won the match and the fans",
    "We ate pasta and bread, and then",
    "Travel by train to the coast is",
]
STEERING = [
    [{"vector": "love-hate", "coeff": 4}],
    [{"vector": "calm", "coeff": 3, "mode": "all"}],
    [],
]


def serve_child(port_file: str, library: str, threads: int) -> None:
    """Runs in the server process: load the demo model, write the port, serve until terminated."""
    import torch

    from engine import capture_actadd, load_model
    from engine.library import Library
    from engine.serve import SteeringServer

    torch.set_num_threads(threads)
    loaded = load_model("demo", device="cpu")
    lib = Library(library)
    if not lib.path_of("love-hate").exists():
        lib.save(capture_actadd(loaded, "Love", "Hate", 2, name="love-hate"), "love-hate")
        lib.to_direction("love-hate", "calm")
    server = SteeringServer(loaded, lib, port=0, max_batch=8, batch_window_ms=10, max_queue=256)
    server.serve_forever(on_started=lambda url: Path(port_file).write_text(str(server.bound_port)))


class Server:
    """The server subprocess, with its base URL and its RSS."""

    def __init__(self, workdir: Path, threads: int):
        import psutil

        port_file = workdir / "port"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_serve",
                "--child",
                str(port_file),
                str(workdir / "lib"),
                str(threads),
            ],
            cwd=common.ROOT,
            env={**os.environ, "PYTHONPATH": str(common.ROOT)},
        )
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server process did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port_file.read_text()}/v1"
        self.process = psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self.process.memory_info().rss / 2**20

    def close(self) -> None:
        self.proc.terminate()  # uvicorn's signal handler: a graceful shutdown
        self.proc.wait(30)


def stream_once(client, url: str, i: int, max_tokens: int) -> tuple[int, float]:
    """One streamed completion; returns (completion tokens, seconds to the first text)."""
    body = {
        "model": "demo",
        "prompt": PROMPTS[i % len(PROMPTS)],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "steering": STEERING[i % len(STEERING)],
    }
    sent, first, tokens = time.perf_counter(), None, 0
    with client.stream("POST", f"{url}/completions", json=body, timeout=120) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if first is None and chunk["choices"] and chunk["choices"][0]["text"]:
                first = time.perf_counter() - sent
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return tokens, first if first is not None else time.perf_counter() - sent


def run_clients(url: str, n_streams: int, n_requests: int, max_tokens: int) -> tuple[int, float, list[float]]:
    """`n_requests` requests by `n_streams` clients at once; (tokens, wall seconds, first-token times)."""
    import httpx

    counter = iter(range(n_requests))
    lock = threading.Lock()
    tokens, ttfts, errors = [0], [], []

    def client_loop() -> None:
        with httpx.Client() as client:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    n, ttft = stream_once(client, url, i, max_tokens)
                except Exception as exc:  # recorded, reported, and fails the run below
                    errors.append(repr(exc))
                    return
                with lock:
                    tokens[0] += n
                    ttfts.append(ttft)

    threads = [threading.Thread(target=client_loop) for _ in range(n_streams)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed: {errors[0]}")
    return tokens[0], time.perf_counter() - started, ttfts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(args: argparse.Namespace) -> dict:
    import tempfile

    result = common.Result("serve", params={k: v for k, v in vars(args).items() if k != "child"})
    workdir = Path(tempfile.mkdtemp(prefix="actadd-bench-serve-"))
    server = Server(workdir, args.threads)
    try:
        run_clients(server.url, args.streams, 2 * args.streams, args.max_tokens)  # warm-up
        ratios, single_rates, multi_rates, ttfts, single_ttfts = [], [], [], [], []
        for rep in range(args.reps):
            order = ["single", "multi"] if rep % 2 == 0 else ["multi", "single"]
            rate = {}
            for variant in order:
                streams = 1 if variant == "single" else args.streams
                tokens, seconds, firsts = run_clients(
                    server.url, streams, args.requests_per_rep, args.max_tokens
                )
                rate[variant] = tokens / seconds
                (ttfts if variant == "multi" else single_ttfts).extend(firsts)
            single_rates.append(rate["single"])
            multi_rates.append(rate["multi"])
            ratios.append(rate["multi"] / rate["single"])
            print(
                f"  rep {rep + 1}/{args.reps}: 1 stream {rate['single']:.0f} tok/s, {args.streams} streams "
                f"{rate['multi']:.0f} tok/s ({ratios[-1]:.2f}x)",
                file=sys.stderr,
                flush=True,
            )
        # Memory: many requests after a warm-up, RSS sampled through the run.
        warm = server.rss_mb()
        samples = [[0, round(warm, 1)]]
        done, step = 0, max(args.streams, args.requests // 10)
        while done < args.requests:
            batch = min(step, args.requests - done)
            run_clients(server.url, args.streams, batch, args.memory_tokens)
            done += batch
            samples.append([done, round(server.rss_mb(), 1)])
        growth = samples[-1][1] - warm
    finally:
        server.close()

    ratio = statistics.median(ratios)
    p50, p99 = percentile(ttfts, 0.5) * 1000, percentile(ttfts, 0.99) * 1000
    result.details.update(
        model="demo",
        ratios=[round(r, 3) for r in ratios],
        single_stream_tok_s=[round(r, 1) for r in single_rates],
        multi_stream_tok_s=[round(r, 1) for r in multi_rates],
        ttft_ms_multi={"p50": round(p50, 1), "p99": round(p99, 1), "n": len(ttfts)},
        ttft_ms_single={
            "p50": round(percentile(single_ttfts, 0.5) * 1000, 1),
            "p99": round(percentile(single_ttfts, 0.99) * 1000, 1),
            "n": len(single_ttfts),
        },
        rss_mb_samples=samples,
        memory_requests=args.requests,
    )
    result.target(
        "serve-a",
        f"{args.streams} concurrent streams / 1 stream, aggregate tok/s",
        ratio,
        ">=",
        2.0,
        unit="x",
    )
    result.target("serve-b", f"time to first token p50, {args.streams} streams", p50, "<=", 250.0, unit=" ms")
    result.target(
        "serve-b", f"time to first token p99, {args.streams} streams", p99, "<=", 1000.0, unit=" ms"
    )
    result.target(
        "serve-c", f"server memory growth over {args.requests} requests", growth, "<=", 50.0, unit=" MB"
    )
    return result.write(args.out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=4, help="concurrent streams (default 4)")
    p.add_argument("--reps", type=int, default=5, help="single/multi repetitions (default 5)")
    p.add_argument("--requests-per-rep", type=int, default=16, help="requests per variant and repetition")
    p.add_argument("--max-tokens", type=int, default=32, help="max_tokens of the throughput requests")
    p.add_argument("--requests", type=int, default=500, help="requests of the memory check (default 500)")
    p.add_argument("--memory-tokens", type=int, default=8, help="max_tokens of the memory-check requests")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the server (default 1)")
    p.add_argument("--quick", action="store_true", help="defaults of 2 repetitions and 60 memory requests")
    p.add_argument("--out", type=Path, default=None, help="result file (default bench/results/serve.json)")
    p.add_argument("--child", nargs=3, metavar=("PORT_FILE", "LIBRARY", "THREADS"), help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> dict | None:
    p = parser()
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(reps=2, requests=60, requests_per_rep=8)  # explicit options still win
    args = p.parse_args(argv)
    if args.child:
        serve_child(args.child[0], args.child[1], int(args.child[2]))
        return None
    data = run(args)
    print(f"serve: load average {data['load_average_start']} -> {data['load_average_end']}")
    common.print_targets(data)
    return data


if __name__ == "__main__":
    main()
