"""Small real HTTP servers on 127.0.0.1 that speak the engines' documented JSON.

Each route maps to (status, body, headers); a body of None with `hang=True` never answers in time.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = tuple[int, bytes, dict[str, str]]


def js(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Route:
    return status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}


OLLAMA = {
    "/api/version": js({"version": "0.11.4"}),
    "/api/ps": js(
        {
            "models": [
                {
                    "name": "qwen2.5-coder:7b",
                    "model": "qwen2.5-coder:7b",
                    "size": 5618579456,
                    "digest": "dae161e27b0e90dd1856c8bb3209201fd6736d8eb66298e75ed87571486f4364",
                    "details": {
                        "parent_model": "",
                        "format": "gguf",
                        "family": "qwen2",
                        "families": ["qwen2"],
                        "parameter_size": "7.6B",
                        "quantization_level": "Q4_K_M",
                    },
                    "expires_at": "2025-08-06T14:23:28.7482+02:00",
                    "size_vram": 5618579456,
                    "context_length": 4096,
                },
                {
                    "name": "llama3:70b",
                    "model": "llama3:70b",
                    "size": 9663676416,
                    "size_vram": 6442450944,
                    "digest": "x",
                    "details": {"quantization_level": "Q4_0"},
                    "expires_at": "2318-01-01T00:00:00Z",
                },
            ]
        }
    ),
}
LLAMACPP = {
    "/health": js({"status": "ok"}),
    "/props": js(
        {
            "default_generation_settings": {"n_ctx": 8192},
            "total_slots": 1,
            "model_path": "../models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
            "build_info": "b6100-1a2b3c4d",
        }
    ),
    "/v1/models": js(
        {
            "object": "list",
            "data": [
                {
                    "id": "../models/Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
                    "object": "model",
                    "created": 1735142223,
                    "owned_by": "llamacpp",
                    "meta": {"n_params": 8030261312, "size": 4912898304},
                }
            ],
        }
    ),
}
VLLM = {
    "/health": (200, b"", {}),
    "/version": js({"version": "0.10.1"}),
    "/v1/models": js(
        {
            "object": "list",
            "data": [
                {
                    "id": "meta-llama/Llama-3.1-8B-Instruct",
                    "object": "model",
                    "created": 1756885796,
                    "owned_by": "vllm",
                    "root": "meta-llama/Llama-3.1-8B-Instruct",
                    "parent": None,
                    "max_model_len": 131072,
                },
                {
                    "id": "my-lora",
                    "object": "model",
                    "owned_by": "vllm",
                    "parent": "meta-llama/Llama-3.1-8B-Instruct",
                },
            ],
        }
    ),
}
LMSTUDIO = {
    "/api/v0/models": js(
        {
            "object": "list",
            "data": [
                {
                    "id": "qwen2-vl-7b-instruct",
                    "type": "vlm",
                    "quantization": "4bit",
                    "state": "not-loaded",
                },
                {
                    "id": "meta-llama-3.1-8b-instruct",
                    "type": "llm",
                    "quantization": "Q4_K_M",
                    "state": "loaded",
                    "max_context_length": 131072,
                },
            ],
        },
        headers={"x-lm-studio-version": "0.3.24"},
    ),
}
MLX = {
    "/health": js({"status": "ok"}),
    "/v1/models": js(
        {
            "object": "list",
            "data": [
                {"id": "mlx-community/Qwen2.5-7B-Instruct-4bit", "object": "model", "created": 1}
            ],
        }
    ),
}


class FakeEngine:
    def __init__(self, routes: dict[str, Route], *, hang_s: float = 0.0) -> None:
        self.routes = routes
        self.hang_s = hang_s
        self.hits: list[str] = []
        self.bodies: list[tuple[str, bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                path = self.path.split("?", 1)[0]
                fake.hits.append(path)
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    fake.bodies.append((path, self.rfile.read(n)))
                if fake.hang_s:
                    time.sleep(fake.hang_s)
                status, body, headers = fake.routes.get(path, js({"error": "not found"}, 404))
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the prober gave up (timeout): expected in hang tests

            do_GET = _answer
            do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> FakeEngine:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fake_engine(routes: dict[str, Route], **kw: Any) -> Iterator[FakeEngine]:
    eng = FakeEngine(routes, **kw).start()
    try:
        yield eng
    finally:
        eng.stop()
