"""Pick and configure a backend for a model of the matrix: ``get_backend(model, options)``.

Without ``--backend`` (or the model row's ``backend``), a model with a local ``path`` runs
with transformers and one with an ``endpoint`` through the OpenAI-compatible client.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, replace
from urllib.parse import urlparse

from tso_data.errors import TSODataError
from tso_data.generate.backend import Backend
from tso_data.generate.limits import RetryPolicy
from tso_data.matrix import ModelInfo
from tso_data.redact import register_secret

BACKENDS = ("transformers", "openai", "vllm")
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"


@dataclass(frozen=True)
class BackendOptions:
    backend: str | None = None  # None: the model row's backend, else inferred
    # transformers / vllm
    batch_size: int | None = None  # default 8 (transformers), 1024 (vllm)
    device: str = "auto"
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    # openai
    concurrency: int = 64
    client_processes: int | None = None  # None: auto_processes(concurrency)
    served_model: str | None = None  # the name the server knows; default path, else name
    api_key_env: str | None = None  # None: $OPENAI_API_KEY, optional for loopback endpoints
    no_api_key: bool = False
    request_timeout_s: float = 600.0
    max_attempts: int = 6
    retry_base_delay_s: float = 1.0
    retry_max_delay_s: float = 60.0
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    seed: int | None = None  # jitter RNG seed (tests)


def resolve_backend_name(model: ModelInfo, requested: str | None) -> str:
    """The backend that will run ``model``, with a clear error when it can't run at all."""
    if model.is_human:
        raise TSODataError(f"model {model.name!r} is the human source; it cannot generate")
    name = requested or model.backend
    if name is None:
        if model.path:
            name = "transformers"
        elif model.endpoint:
            name = "openai"
        else:
            raise TSODataError(
                f"model {model.name!r} has neither a path nor an endpoint; re-add it with "
                "--path DIR (transformers/vllm) or --endpoint URL (openai)"
            )
    if name not in BACKENDS:
        raise TSODataError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in ("transformers", "vllm") and not model.path:
        raise TSODataError(f"model {model.name!r}: the {name} backend needs a local path (models.path is empty)")
    if name == "openai" and not model.endpoint:
        raise TSODataError(f"model {model.name!r}: the openai backend needs an endpoint (models.endpoint is empty)")
    return name


def resolve_api_key(endpoint: str, options: BackendOptions) -> str | None:
    """The API key from the environment variable the options name (never logged).

    A missing variable is an error, except for the default variable against a loopback
    endpoint (local vLLM / `transformers serve` servers usually need no key).
    """
    if options.no_api_key:
        return None
    variable = options.api_key_env or DEFAULT_API_KEY_ENV
    key = os.environ.get(variable)
    if key:
        register_secret(key)
        return key
    if options.api_key_env is None and _is_loopback(endpoint):
        return None
    raise TSODataError(
        f"missing API key: environment variable {variable} is not set (use --api-key-env NAME, "
        "or --no-api-key for a server that needs none)"
    )


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def get_backend(model: ModelInfo, options: BackendOptions | None = None, *, backend: str | None = None) -> Backend:
    """A ready backend for ``model`` (loads local weights; checks nothing remote yet).

    ``backend`` overrides ``options.backend`` (``get_backend(info, backend="openai")``).
    """
    options = options or BackendOptions()
    if backend is not None:
        options = replace(options, backend=backend)
    name = resolve_backend_name(model, options.backend)
    if name == "transformers":
        from tso_data.generate.transformers_backend import TransformersBackend, TransformersSettings

        return TransformersBackend(
            TransformersSettings(
                path=str(model.path),
                device=options.device,
                dtype=options.dtype,
                batch_size=options.batch_size or 8,
            )
        )
    if name == "vllm":
        from tso_data.generate.vllm_backend import VLLMBackend, VLLMSettings

        return VLLMBackend(
            VLLMSettings(
                path=str(model.path),
                tensor_parallel_size=options.tensor_parallel_size,
                batch_size=options.batch_size or 1024,
                dtype=options.dtype,
                gpu_memory_utilization=options.gpu_memory_utilization,
                max_model_len=options.max_model_len,
            )
        )
    from tso_data.generate.openai_backend import OpenAIBackend, OpenAISettings, auto_processes

    endpoint = str(model.endpoint)
    return OpenAIBackend(
        OpenAISettings(
            base_url=endpoint,
            model=options.served_model or model.path or model.name,
            api_key=resolve_api_key(endpoint, options),
            concurrency=options.concurrency,
            request_timeout_s=options.request_timeout_s,
            retry=RetryPolicy(options.max_attempts, options.retry_base_delay_s, options.retry_max_delay_s),
            requests_per_minute=options.requests_per_minute,
            tokens_per_minute=options.tokens_per_minute,
            processes=options.client_processes or auto_processes(options.concurrency),
        ),
        seed=options.seed,
    )
