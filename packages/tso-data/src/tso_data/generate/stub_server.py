"""A small OpenAI-compatible chat server with fixed latency and scripted faults, for
tests, benchmarks and dry runs of a pipeline (no model behind it).

    python -m tso_data.generate.stub_server --port 8000 --latency 0.1

It answers ``GET /v1/models`` and ``POST /v1/chat/completions`` with a trivial text that
echoes the conversation's shape. A last user message containing ``[[faults:429,500,...]]``
gets those faults on its successive attempts, then success:

- ``429``: Too Many Requests with ``Retry-After: <retry_after>``
- ``500`` / ``503``: server errors
- ``slow``: the answer comes after ``slow_s`` (past a client's timeout)
- ``malformed``: status 200 with a body that is not JSON
- ``nochoices``: status 200 with JSON lacking ``choices``
- ``drop``: the connection is closed without an answer
- ``401``: Unauthorized, the body echoing the key it was sent, as OpenAI's API does
  ("Incorrect API key provided: sk-...")

Plain asyncio (no web framework) so it is cheap enough not to be the bottleneck when a
benchmark drives it with hundreds of concurrent requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field

_FAULTS_RE = re.compile(r"\[\[faults:([a-z0-9,]+)\]\]")
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass
class LoggedRequest:
    at: float  # time.monotonic() when the request arrived
    key: str  # the last user message
    attempt: int
    outcome: str  # 'ok' or the fault
    messages: list[dict[str, str]]
    params: dict[str, object]
    authorization: str | None = None


@dataclass
class StubServer:
    latency_s: float = 0.1
    retry_after: float = 1.0
    slow_s: float = 5.0
    model: str = "stub"
    log: list[LoggedRequest] = field(default_factory=list)
    keep_log: bool = True
    _attempts: dict[str, int] = field(default_factory=dict)
    _authorization: str | None = None

    # -- HTTP ------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                self._authorization = headers.get("authorization")
                if not await self._respond(method, path.split("?")[0], body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return  # client gone, or the server is stopping
        finally:
            writer.close()

    async def _respond(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> bool:
        if method == "GET" and path.endswith("/models"):
            _send(writer, 200, {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "stub"}]})
            await writer.drain()
            return True
        if method != "POST" or not path.endswith("/chat/completions"):
            _send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            await writer.drain()
            return True
        request = json.loads(body)
        messages = request.get("messages", [])
        key = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        attempt = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempt
        match = _FAULTS_RE.search(key)
        faults = match.group(1).split(",") if match else []
        outcome = faults[attempt - 1] if attempt <= len(faults) else "ok"
        if self.keep_log:
            params = {k: v for k, v in request.items() if k != "messages"}
            self.log.append(LoggedRequest(time.monotonic(), key, attempt, outcome, messages, params,
                                          self._authorization))
        if outcome == "drop":
            return False
        await asyncio.sleep(self.slow_s if outcome == "slow" else self.latency_s)
        if outcome in ("429", "500", "503"):
            extra = {"retry-after": f"{self.retry_after:g}"} if outcome == "429" else {}
            _send(writer, int(outcome), {"error": {"message": f"injected {outcome}"}}, extra)
        elif outcome == "401":
            sent = (self._authorization or "").removeprefix("Bearer ").strip()
            _send(writer, 401, {"error": {"message": f"Incorrect API key provided: {sent}. You can find your "
                                          "API key at https://platform.example/account/api-keys.",
                                          "type": "invalid_request_error", "code": "invalid_api_key"}})
        elif outcome == "malformed":
            _send_raw(writer, 200, b"{this is not json", "application/json")
        elif outcome == "nochoices":
            _send(writer, 200, {"id": "x", "object": "chat.completion", "created": 0, "model": self.model})
        else:
            _send(writer, 200, self._completion(messages, request))
        await writer.drain()
        return True

    def _completion(self, messages: list[dict[str, str]], request: dict[str, object]) -> dict[str, object]:
        n_assistant = sum(1 for m in messages if m.get("role") == "assistant")
        last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        text = f"answer {n_assistant + 1} to: {last_user[:40]}"
        prompt_tokens = sum(len(m.get("content", "").split()) for m in messages)
        completion_tokens = len(text.split())
        return {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    # -- running ---------------------------------------------------------------------------

    async def serve(self, host: str, port: int, ready: threading.Event | None = None,
                    bound: list[int] | None = None) -> None:
        server = await asyncio.start_server(self.handle, host, port, backlog=4096)
        if bound is not None:
            bound.append(server.sockets[0].getsockname()[1])
        if ready is not None:
            ready.set()
        async with server:
            await server.serve_forever()

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> RunningStub:
        """Serve on a daemon thread; returns its base URL (``http://host:port/v1``)."""
        ready = threading.Event()
        bound: list[int] = []
        loop = asyncio.new_event_loop()

        def target() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(host, port, ready, bound))
            except asyncio.CancelledError:
                pass

        thread = threading.Thread(target=target, daemon=True, name="stub-openai-server")
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("stub server did not start")
        return RunningStub(self, f"http://{host}:{bound[0]}/v1", loop, thread)


@dataclass
class RunningStub:
    server: StubServer
    base_url: str
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def stop(self) -> None:
        def cancel_all() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()

        self.loop.call_soon_threadsafe(cancel_all)
        self.thread.join(timeout=5)


def _send(writer: asyncio.StreamWriter, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
    _send_raw(writer, status, json.dumps(payload).encode(), "application/json", headers)


def _send_raw(writer: asyncio.StreamWriter, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: keep-alive\r\n{extra}\r\n")
    writer.write(head.encode("latin-1") + body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds before each answer")
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--slow", type=float, default=5.0, help="seconds for a 'slow' fault")
    args = parser.parse_args(argv)
    stub = StubServer(latency_s=args.latency, retry_after=args.retry_after, slow_s=args.slow, keep_log=False)
    bound: list[int] = []

    async def run() -> None:
        server = await asyncio.start_server(stub.handle, args.host, args.port, backlog=4096)
        bound.append(server.sockets[0].getsockname()[1])
        print(f"READY http://{args.host}:{bound[0]}/v1", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
