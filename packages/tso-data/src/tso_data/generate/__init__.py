"""Generation backends and the resumable request loop.

    from tso_data.generate import BackendOptions, get_backend, run_requests
"""

from tso_data.generate.backend import Backend, Request, Result, SamplingParams
from tso_data.generate.factory import BackendOptions, get_backend
from tso_data.generate.runner import RunSummary, run_requests

__all__ = [
    "Backend", "BackendOptions", "Request", "Result", "RunSummary", "SamplingParams", "get_backend", "run_requests",
]
