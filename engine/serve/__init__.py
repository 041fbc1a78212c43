"""An OpenAI-compatible local server with per-request steering (`python main.py serve`, the GUI's Serve toggle).

    from engine.serve import SteeringServer
    server = SteeringServer(loaded, library, host="127.0.0.1", port=8000, api_key=None, lock=model_lock)
    url = server.start()   # background thread; server.stop() shuts it down gracefully

Modules: schemas (request bodies), steering_spec (library vectors per request), prompts (token ids and
limits), batcher (static micro-batches through engine.generate), responses (OpenAI bodies), app (routes),
server (uvicorn lifecycle). See docs/serving.md.
"""

from engine.serve.app import RequestLog
from engine.serve.batcher import QueueFullError
from engine.serve.server import DEFAULT_HOST, DEFAULT_PORT, SteeringServer, check_bind, served_model_id

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "QueueFullError",
    "RequestLog",
    "SteeringServer",
    "check_bind",
    "served_model_id",
]
