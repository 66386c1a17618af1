"""Spread the openai backend's requests over several client processes.

The official SDK costs about 1 ms of CPU per request, so one process tops out near
1,000 requests/s and, well before that, adds queueing delay to every request. The pool
starts ``processes`` workers (``spawn``, so no lock is inherited from the caller's
threads); each runs its own event loop and SDK client with its share of the concurrency
and of the rate limits (:meth:`OpenAISettings.share`).

The parent keeps the request iterator and hands requests out on demand: each worker
starts with two rounds of its concurrency, then receives one new request for each result
it returns, so no worker idles while another has a backlog. Results come back in small
batches (whatever finished in one turn of the worker's event loop).

Protocol over one duplex pipe per worker:

- worker -> parent: ``("ready",)`` or ``("error", message)`` once after start-up (the
  endpoint's preflight); then per run ``("results", [Result, ...])`` ... ``("done",)``.
- parent -> worker: ``("requests", [Request, ...])`` ... ``("end",)`` per run.

A worker reads and sends on two threads of its own, so its event loop never blocks on
the pipe and neither side can block the other (a full pipe only stalls that thread). A worker whose parent is gone
(pipe closed, e.g. after ``kill -9``) exits at once; nothing it held was stored, so the
next run does that work again.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from tso_data.errors import TSODataError
from tso_data.generate.backend import Request, Result

if TYPE_CHECKING:
    from tso_data.generate.openai_backend import OpenAISettings

_READY, _ERROR, _RESULTS, _DONE = "ready", "error", "results", "done"
# Client processes run at a lower priority: when the cores are busy, the command's own
# process (handing out requests, writing the catalog) and a model server on the same
# machine go first; the clients only spend what is left.
CLIENT_NICENESS = 5
_REQUESTS, _END = "requests", "end"


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    concurrency: int
    ended: bool = False  # told that this run has no more requests


class ClientPool:
    """``processes`` client processes that together keep ``concurrency`` requests in flight."""

    def __init__(self, settings: OpenAISettings, *, seed: int | None = None) -> None:
        self.settings = settings
        self._seed = seed
        self._workers: list[_Worker] = []
        self._ready = False
        self._start()

    def start(self) -> None:
        """Block until every process is up and has passed the endpoint's preflight."""
        if not self._workers:
            self._start()
        if not self._ready:
            self._wait_ready()

    def run(self, requests: Iterable[Request]) -> Iterator[Result]:
        self.start()
        source = iter(requests)
        for worker in self._workers:
            worker.ended = False
            self._feed(worker, source, 2 * worker.concurrency)
        running = {worker.conn: worker for worker in self._workers}
        finished = False
        try:
            while running:
                for conn in wait(list(running)):
                    worker = running[conn]
                    message = self._receive(worker)
                    if message[0] == _RESULTS:
                        results: list[Result] = message[1]
                        self._feed(worker, source, len(results))
                        yield from results
                    elif message[0] == _DONE:
                        del running[conn]
                    else:
                        raise TSODataError(str(message[1]))
            finished = True
        finally:
            if not finished:  # an error, Ctrl-C or a consumer that stopped: the workers are mid-run
                self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.process.terminate()
        for worker in self._workers:
            worker.process.join(timeout=5)
            worker.conn.close()
        self._workers = []
        self._ready = False

    # -- parent side ---------------------------------------------------------------------

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for index in range(self.settings.processes):
            share = self.settings.share(index)
            parent_end, child_end = context.Pipe(duplex=True)
            seed = None if self._seed is None else self._seed + index
            process = context.Process(target=_client_process, args=(child_end, share, seed),
                                      name=f"tso-openai-client-{index}", daemon=True)
            process.start()
            child_end.close()
            self._workers.append(_Worker(index, process, parent_end, share.concurrency))

    def _wait_ready(self) -> None:
        for worker in self._workers:
            message = self._receive(worker, starting=True)
            if message[0] != _READY:
                self.close()
                raise TSODataError(str(message[1]))
        self._ready = True

    def _feed(self, worker: _Worker, source: Iterator[Request], count: int) -> None:
        if worker.ended:
            return
        batch = list(itertools.islice(source, count))
        if batch:
            worker.conn.send((_REQUESTS, batch))
        if len(batch) < count:
            worker.conn.send((_END,))
            worker.ended = True

    def _receive(self, worker: _Worker, starting: bool = False) -> tuple:
        try:
            return worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=5)
            code = worker.process.exitcode
            self.close()
            if starting:
                raise TSODataError(
                    f"openai client process {worker.index} exited while starting (exit code {code}); from a "
                    "script of your own, start the work under `if __name__ == '__main__':` (processes are "
                    "spawned and import your main module), or use --client-processes 1"
                ) from None
            raise TSODataError(
                f"openai client process {worker.index} stopped unexpectedly (exit code {code}); "
                "the results received so far are kept, rerun to do the rest"
            ) from None


# -- worker side ---------------------------------------------------------------------------


def _client_process(conn: Connection, settings: OpenAISettings, seed: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    os.nice(CLIENT_NICENESS)
    outbox: queue.Queue[object] = queue.Queue()
    sender = threading.Thread(target=_send_loop, args=(conn, outbox), daemon=True)
    sender.start()
    try:
        asyncio.run(_serve_forever(conn, settings, seed, outbox))
    finally:
        outbox.put(None)
        sender.join(timeout=10)


def _receive_loop(conn: Connection, loop: asyncio.AbstractEventLoop, deliver: Callable[[tuple], None]) -> None:
    """Blocking reads on a thread of their own: the event loop never touches the pipe."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: nothing of ours can be stored any more
        loop.call_soon_threadsafe(deliver, message)


def _send_loop(conn: Connection, outbox: queue.Queue[object]) -> None:
    while True:
        message = outbox.get()
        if message is None:
            return
        try:
            conn.send(message)
        except (OSError, EOFError):
            os._exit(0)  # the parent is gone


async def _serve_forever(conn: Connection, settings: OpenAISettings, seed: int | None,
                         outbox: queue.Queue[object]) -> None:
    from tso_data.generate.openai_backend import OpenAIBackend

    backend = OpenAIBackend(settings, seed=seed)
    client = backend.make_client()
    loop = asyncio.get_running_loop()
    work: asyncio.Queue[Request | None] = asyncio.Queue()

    def deliver(message: tuple) -> None:
        if message[0] == _REQUESTS:
            for request in message[1]:
                work.put_nowait(request)
        elif message[0] == _END:
            for _ in range(settings.concurrency):
                work.put_nowait(None)  # one stop sign per request loop worker

    try:
        await backend.preflight(client)
    except TSODataError as exc:
        outbox.put((_ERROR, str(exc)))
        return
    outbox.put((_READY,))
    threading.Thread(target=_receive_loop, args=(conn, loop, deliver), daemon=True).start()

    batch: list[Result] = []

    def flush() -> None:
        if batch:
            outbox.put((_RESULTS, batch.copy()))
            batch.clear()

    def emit(result: Result) -> None:
        if not batch:
            loop.call_soon(flush)  # everything finished in this turn of the loop goes together
        batch.append(result)

    while True:
        await backend.serve(client, work.get, emit)
        flush()
        outbox.put((_DONE,))
