"""Small real HTTP servers on 127.0.0.1 that speak the engines' documented JSON.

Each route maps to (status, body, headers), or to a function of (query, request body) giving
one (Ollama's POST /api/show, llama.cpp router's `?model=`). `hang_s` delays every answer.
Run as a script (`python fake_engines.py NAME [ARGS...]`) it serves the route set NAME in a
process of its own, whose command line carries ARGS (mlx_lm's `--model`), and prints its URL.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

Route = tuple[int, bytes, dict[str, str]]
Dynamic = Callable[[dict[str, list[str]], bytes], Route]


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
QWEN_DIGEST = "dae161e27b0e90dd1856c8bb3209201fd6736d8eb66298e75ed87571486f4364"
# /api/show model_info as Ollama sends it (GGUF keys), for Llama 3.1 8B, Qwen2.5-Coder 7B and
# Gemma 3 270M (sliding-window attention, explicit key/value lengths)
SHOW = {
    "llama3.1:8b": {
        "details": {"family": "llama", "parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
        "model_info": {
            "general.architecture": "llama",
            "general.parameter_count": 8030261248,
            "llama.block_count": 32,
            "llama.attention.head_count": 32,
            "llama.attention.head_count_kv": 8,
            "llama.embedding_length": 4096,
            "llama.context_length": 131072,
            "llama.vocab_size": 128256,
            "llama.rope.dimension_count": 128,
            "tokenizer.ggml.tokens": None,
        },
        "capabilities": ["completion", "tools"],
    },
    "qwen2.5-coder:7b": {
        "details": {"family": "qwen2", "parameter_size": "7.6B", "quantization_level": "Q4_K_M"},
        "model_info": {
            "general.architecture": "qwen2",
            "general.parameter_count": 7615616512,
            "qwen2.block_count": 28,
            "qwen2.attention.head_count": 28,
            "qwen2.attention.head_count_kv": 4,
            "qwen2.embedding_length": 3584,
            "qwen2.context_length": 32768,
        },
    },
    "gemma3:270m": {
        "details": {"family": "gemma3", "parameter_size": "268.10M", "quantization_level": "Q8_0"},
        "model_info": {
            "general.architecture": "gemma3",
            "general.parameter_count": 268098176,
            "gemma3.block_count": 18,
            "gemma3.attention.head_count": 4,
            "gemma3.attention.head_count_kv": 1,
            "gemma3.attention.key_length": 256,
            "gemma3.attention.value_length": 256,
            "gemma3.attention.sliding_window": 512,
            "gemma3.embedding_length": 640,
            "gemma3.context_length": 32768,
        },
    },
}


def ollama_show(shows: dict[str, Any]) -> Dynamic:
    """POST /api/show {"model": NAME} (older clients send "name")."""

    def route(query: dict[str, list[str]], body: bytes) -> Route:
        req = json.loads(body or b"{}")
        name = req.get("model") or req.get("name")
        if name not in shows:
            return js({"error": f"model '{name}' not found"}, 404)
        return js(shows[name])

    return route


OLLAMA_TAGS = js(
    {
        "models": [
            {
                "name": "qwen2.5-coder:7b",
                "model": "qwen2.5-coder:7b",
                "modified_at": "2025-08-01T10:00:00.123456789+02:00",
                "size": 4683087332,
                "digest": QWEN_DIGEST,
                "details": {
                    "format": "gguf",
                    "family": "qwen2",
                    "parameter_size": "7.6B",
                    "quantization_level": "Q4_K_M",
                },
            },
            {
                "name": "llama3.1:8b",
                "model": "llama3.1:8b",
                "size": 4920753328,
                "digest": "46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e",
                "details": {"parameter_size": "8.0B", "quantization_level": "Q4_K_M"},
            },
            {
                "name": "gemma3:270m",
                "model": "gemma3:270m",
                "size": 291554930,
                "digest": "e7d36fb2c3b3293cfe56d55889867a064b3a2b22e98335f2e6e8a387e081d6be",
                "details": {"parameter_size": "268.10M", "quantization_level": "Q8_0"},
            },
        ]
    }
)
# a current Ollama: /api/ps with context_length, /api/tags, /api/show
OLLAMA_FULL = {**OLLAMA, "/api/tags": OLLAMA_TAGS, "/api/show": ollama_show(SHOW)}
LLAMACPP_OLD = {
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
LLAMA_PROPS = {
    "default_generation_settings": {"n_ctx": 4096, "params": {"n_predict": -1}},
    "total_slots": 2,
    "model_alias": "gemma-3-270m-q4_k_m.gguf",
    "model_ftype": "Q4_K - Medium",
    "model_path": "/models/gemma-3-270m-q4_k_m.gguf",
    "modalities": {"vision": False},
    "build_info": "b6500-9f8e7d6c",
    "is_sleeping": False,
}
LLAMA_META = {
    "vocab_type": 1,
    "n_vocab": 262144,
    "n_ctx": 4096,
    "n_ctx_train": 32768,
    "n_embd": 640,
    "n_params": 268098176,
    "size": 252716032,
    "ftype": "Q4_K - Medium",
}
LLAMA_SLOTS = [
    {"id": 0, "id_task": -1, "n_ctx": 4096, "speculative": False, "is_processing": False},
    {"id": 1, "id_task": 7, "n_ctx": 4096, "speculative": False, "is_processing": True},
]
# a current llama-server: -c 8192 -np 2, one slot busy
LLAMACPP = {
    "/health": js({"status": "ok"}),
    "/props": js(LLAMA_PROPS),
    "/slots": js(LLAMA_SLOTS),
    "/v1/models": js(
        {
            "models": [{"name": "gemma-3-270m-q4_k_m.gguf", "model": "gemma-3-270m-q4_k_m.gguf"}],
            "object": "list",
            "data": [
                {
                    "id": "gemma-3-270m-q4_k_m.gguf",
                    "aliases": [],
                    "object": "model",
                    "created": 1764586800,
                    "owned_by": "llamacpp",
                    "meta": LLAMA_META,
                }
            ],
        }
    ),
}
# the same server started in the model's folder (`-m gemma-3-270m-q4_k_m.gguf`): a relative path
LLAMACPP_HERE = {
    **LLAMACPP,
    "/props": js({**LLAMA_PROPS, "model_path": "gemma-3-270m-q4_k_m.gguf"}),
}
# llama-cpp-python's server: OpenAI routes only, owned_by "me"
LLAMA_CPP_PYTHON = {
    "/v1/models": js(
        {
            "object": "list",
            "data": [
                {
                    "id": "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf",
                    "object": "model",
                    "owned_by": "me",
                    "permissions": [],
                }
            ],
        }
    ),
}


def router_child(models: dict[str, dict[str, Any]]) -> Callable[[str], Dynamic]:
    """llama.cpp router's `GET /props?model=` and `/slots?model=`: the child server's answer."""

    def for_route(route: str) -> Dynamic:
        def answer(query: dict[str, list[str]], body: bytes) -> Route:
            name = (query.get("model") or [""])[0]
            if not name:
                return js(ROUTER_PROPS) if route == "/props" else js({"error": "no model"}, 400)
            if query.get("autoload") != ["false"]:
                return js({"error": "the probe must never autoload"}, 418)
            if name not in models:
                return js({"error": {"code": 400, "message": "model is not loaded"}}, 400)
            return js(models[name][route])

        return answer

    return for_route


ROUTER_PROPS = {
    "role": "router",
    "max_instances": 4,
    "models_autoload": True,
    "model_alias": "llama-server",
    "model_path": "none",
    "default_generation_settings": {"params": {}, "n_ctx": 0},
    "build_info": "b6500-9f8e7d6c",
}
ROUTER_MODELS = {
    "object": "list",
    "data": [
        {
            "id": "ggml-org/gemma-3-270m-GGUF:Q4_K_M",
            "object": "model",
            "owned_by": "llamacpp",
            "path": "/cache/llama.cpp/ggml-org_gemma-3-270m-GGUF_gemma-3-270m-Q4_K_M.gguf",
            "status": {"value": "loaded", "args": ["llama-server", "-ctx", "8192"]},
            "meta": LLAMA_META,
        },
        {
            "id": "ggml-org/Qwen3-0.6B-GGUF:Q8_0",
            "object": "model",
            "owned_by": "llamacpp",
            "status": {"value": "unloaded"},
        },
        {
            "id": "bartowski/Llama-3.2-1B-GGUF:Q4_K_M",
            "object": "model",
            "owned_by": "llamacpp",
            "status": {"value": "sleeping", "args": ["llama-server", "-ctx", "4096"]},
        },
        {
            "id": "unsloth/Qwen3-4B-GGUF:Q4_K_M",
            "object": "model",
            "owned_by": "llamacpp",
            "status": {"value": "loading", "args": ["llama-server", "-ctx", "4096"]},
        },
    ],
}
_child = router_child(
    {
        "ggml-org/gemma-3-270m-GGUF:Q4_K_M": {
            "/props": {
                **LLAMA_PROPS,
                "total_slots": 1,
                "model_path": ROUTER_MODELS["data"][0]["path"],
            },
            "/slots": [{"id": 0, "n_ctx": 8192, "is_processing": False}],
        }
    }
)
LLAMACPP_ROUTER = {
    "/health": js({"status": "ok"}),
    "/props": _child("/props"),
    "/slots": _child("/slots"),
    "/v1/models": js(ROUTER_MODELS),
    "/models": js(ROUTER_MODELS),
}
VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",calculate_kv_scales="False",\
enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.9",is_attention_free="False",\
num_cpu_blocks="None",num_gpu_blocks="27349",num_gpu_blocks_override="None",\
prefix_caching_hash_algo="builtin",sliding_window="None",swap_space="4"} 1.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 123456.0
"""
# an older vLLM: the deprecated gpu_cache_usage_perc, fp8 KV cache, idle
VLLM_METRICS_OLD = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 0.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.5
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="32",cache_dtype="fp8",gpu_memory_utilization="0.85",\
num_gpu_blocks="1000"} 1.0
"""
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
    "/metrics": (200, VLLM_METRICS.encode(), {"Content-Type": "text/plain; version=0.0.4"}),
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
# LM Studio 0.4+: /api/v1/models, every model on disk with its loaded instances
LMSTUDIO_V1_MODELS = {
    "models": [
        {
            "type": "llm",
            "publisher": "lmstudio-community",
            "key": "qwen/qwen3-4b",
            "display_name": "Qwen3 4B",
            "architecture": "qwen3",
            "quantization": {"name": "Q4_K_M", "bits_per_weight": 4.8},
            "size_bytes": 2497280256,
            "params_string": "4B",
            "loaded_instances": [
                {
                    "id": "qwen/qwen3-4b",
                    "config": {
                        "context_length": 8192,
                        "eval_batch_size": 512,
                        "parallel": 4,
                        "flash_attention": True,
                        "offload_kv_cache_to_gpu": True,
                    },
                }
            ],
            "max_context_length": 40960,
            "format": "gguf",
            "capabilities": {"vision": False, "trained_for_tool_use": True},
        },
        {
            "type": "llm",
            "key": "google/gemma-3-12b",
            "architecture": "gemma3",
            "quantization": {"name": "Q3_K_L", "bits_per_weight": 3},
            "size_bytes": 6862187520,
            "params_string": "12B",
            "loaded_instances": [],
            "max_context_length": 131072,
            "format": "gguf",
        },
        {"type": "embedding", "key": "text-embedding-nomic-embed-text-v1.5"},
    ]
}
LMSTUDIO_V1 = {
    "/api/v1/models": js(LMSTUDIO_V1_MODELS, headers={"x-lm-studio-version": "0.4.1"}),
    **LMSTUDIO,
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
    def __init__(self, routes: dict[str, Route | Dynamic], *, hang_s: float = 0.0) -> None:
        self.routes = routes
        self.hang_s = hang_s
        self.hits: list[str] = []
        self.bodies: list[tuple[str, bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                path, _, query = self.path.partition("?")
                fake.hits.append(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                if n:
                    fake.bodies.append((path, data))
                if fake.hang_s:
                    time.sleep(fake.hang_s)
                route = fake.routes.get(path, js({"error": "not found"}, 404))
                if callable(route):
                    route = route(parse_qs(query), data)
                status, body, headers = route
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
def fake_engine(routes: dict[str, Route | Dynamic], **kw: Any) -> Iterator[FakeEngine]:
    eng = FakeEngine(routes, **kw).start()
    try:
        yield eng
    finally:
        eng.stop()


class Loading:
    """Load endpoints whose requests change what the probes read next: Ollama's /api/generate
    (an empty prompt loads, keep_alive 0 unloads) and /api/pull, llama.cpp router's
    /models/load, LM Studio's /api/v1/models/load. `routes(base)` wraps a route set."""

    def __init__(
        self,
        resident: list[dict[str, Any]],
        disk: list[dict[str, Any]],
        shows: dict[str, Any] | None = None,
    ) -> None:
        self.resident = resident  # Ollama /api/ps entries
        self.disk = {m["name"]: m for m in disk}  # Ollama /api/tags entries
        self.shows = SHOW if shows is None else shows  # /api/show answers
        self.lock = threading.Lock()

    def ollama(self) -> dict[str, Route | Dynamic]:
        def ps(query: dict[str, list[str]], body: bytes) -> Route:
            with self.lock:
                return js({"models": list(self.resident)})

        def tags(query: dict[str, list[str]], body: bytes) -> Route:
            return js({"models": list(self.disk.values())})

        def generate(query: dict[str, list[str]], body: bytes) -> Route:
            req = json.loads(body)
            name = req["model"]
            with self.lock:
                if req.get("keep_alive") == 0:
                    self.resident[:] = [m for m in self.resident if m["name"] != name]
                    return js({"model": name, "done": True, "done_reason": "unload"})
                if name not in self.disk:
                    return js({"error": f"model '{name}' not found"}, 404)
                if all(m["name"] != name for m in self.resident):
                    size = self.disk[name]["size"]
                    ctx = (req.get("options") or {}).get("num_ctx", 4096)
                    self.resident.append(
                        {**self.disk[name], "size_vram": size, "context_length": ctx}
                    )
            return js({"model": name, "done": True, "done_reason": "load"})

        return {
            **OLLAMA,
            "/api/ps": ps,
            "/api/tags": tags,
            "/api/show": ollama_show(self.shows),
            "/api/generate": generate,
            "/api/pull": js({"status": "success"}),
        }


def router_loading(models: dict[str, Any]) -> dict[str, Route | Dynamic]:
    """A llama.cpp router whose POST /models/load {"model"} marks the model loaded."""
    lock = threading.Lock()

    def listing(query: dict[str, list[str]], body: bytes) -> Route:
        with lock:
            return js(models)

    def load(query: dict[str, list[str]], body: bytes) -> Route:
        name = json.loads(body).get("model")
        with lock:
            for d in models["data"]:
                if d["id"] == name:
                    d["status"] = {"value": "loaded", "args": ["llama-server", "-ctx", "4096"]}
                    return js({"success": True})
        return js({"error": {"code": 404, "message": f"model {name} not found"}}, 404)

    return {**LLAMACPP_ROUTER, "/models": listing, "/v1/models": listing, "/models/load": load}


if __name__ == "__main__":  # python fake_engines.py NAME [ARGS...]: ARGS land in its cmdline
    import signal
    import subprocess

    # `--child PATH`: a child process serving PATH, as a llama.cpp router's model servers do
    child = None
    if "--child" in sys.argv:
        path = sys.argv[sys.argv.index("--child") + 1]
        child = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", "--model", path]
        )

    def stop(*_: object) -> None:
        if child is not None:
            child.kill()
            child.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server = FakeEngine(globals()[sys.argv[1]])
    print(server.url, flush=True)
    server.server.serve_forever()
