"""`serve`: an OpenAI-compatible endpoint with per-request steering (engine.serve)."""

from __future__ import annotations

import argparse
import os
import sys

from engine.cli import add_library_option, add_model_options, load_model_from_args

# The same defaults as engine.serve.server; not imported from there so that `--help` needs no FastAPI.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def register(sub) -> None:
    serve = sub.add_parser("serve", help="serve the model over an OpenAI-compatible API, steered per request")
    add_model_options(serve)
    serve.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("ACTADD_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default $ACTADD_API_KEY); needed off loopback",
    )
    serve.add_argument("--served-name", help="the model name clients send (default: the model folder's name)")
    serve.add_argument("--max-batch", type=int, default=8, help="rows per micro-batch (default 8)")
    serve.add_argument("--batch-window-ms", type=float, default=10.0, help="how long a batch collects (10)")
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests before 503 (default 64)")
    serve.add_argument("--max-tokens", type=int, default=256, help="max_tokens when a request sets none")
    add_library_option(serve)
    serve.set_defaults(handler=run_serve, json=False)


def run_serve(args: argparse.Namespace) -> int:
    from engine.serve.server import SteeringServer, check_bind

    check_bind(args.host, args.api_key)  # before the slow model load
    loaded = load_model_from_args(args)
    server = SteeringServer(
        loaded,
        args.library,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        model_id=args.served_name,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        max_queue=args.max_queue,
        default_max_tokens=args.max_tokens,
    )

    def started(url: str) -> None:
        print(f"serving {server.model_id!r} at {url} (Ctrl-C stops)", file=sys.stderr, flush=True)

    server.serve_forever(on_started=started)
    return 0
