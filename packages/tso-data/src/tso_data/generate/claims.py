"""Work claims: two `generate` runs of the same model never both send the same request.

A run plans the responses it still owes, then *claims* them: it writes their ids to
``<catalog>/claims/generate/<uuid>.claim`` and holds an exclusive ``flock`` on that file
for as long as it runs. A second run plans under the same planning lock, reads every live
claim and leaves the claimed ids out of its own plan (they are being generated); the
summary says how many it skipped and for which process. The kernel drops the lock when
the owner exits, however it exits (``kill -9`` included), so a claim whose lock can be
taken is stale and is removed by the next planner.

Claims are advisory and local to a file system: workers on several machines that share
the catalog over a network file system should split the work with ``--shard i/N``.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tso_data.catalog import Catalog

CLAIMS_DIR = Path("claims") / "generate"


def claims_dir(catalog: Catalog) -> Path:
    return catalog.root / CLAIMS_DIR


@dataclass
class WorkClaim:
    """This run's claim: held (locked) until :meth:`release`; no file when every planned
    id was another run's (or nothing was planned)."""

    path: Path | None
    fd: int = -1
    skipped: int = 0  # planned responses left out because another run claimed them
    other_pids: list[int] = field(default_factory=list)

    def release(self) -> None:
        """Drop the claim (the run is over: its responses are in shards or failures)."""
        if self.path is None or self.fd < 0:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing the descriptor releases the lock
        self.fd = -1


@contextmanager
def planning_lock(catalog: Catalog) -> Iterator[None]:
    """One planner at a time, so a claim is written before the next run reads the claims.
    The lock is on the catalog directory itself: planning creates no file."""
    fd = os.open(catalog.root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def claim(catalog: Catalog, model: str, ids: list[str]) -> tuple[WorkClaim, set[str]]:
    """Claim ``ids`` of ``model`` except those other live runs hold; call it inside
    :func:`planning_lock`. Returns this run's claim and the ids claimed by others."""
    taken, pids = live_claims(catalog, model)
    overlap = set(ids) & taken
    if len(overlap) == len(ids):
        return WorkClaim(None, skipped=len(overlap), other_pids=pids), overlap
    mine = [i for i in ids if i not in taken]
    claims_dir(catalog).mkdir(parents=True, exist_ok=True)
    path = claims_dir(catalog) / f"{uuid.uuid4().hex}.claim"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    header = {"model": model, "pid": os.getpid(), "started": datetime.now(UTC).isoformat(timespec="seconds")}
    os.write(fd, (json.dumps(header) + "\n" + "".join(f"{i}\n" for i in mine)).encode())
    return WorkClaim(path, fd, skipped=len(overlap), other_pids=pids), overlap


def live_claims(catalog: Catalog, model: str) -> tuple[set[str], list[int]]:
    """The ids claimed for ``model`` by running processes, and their pids; stale claims
    (their owner is gone: the lock can be taken) are removed on the way."""
    taken: set[str] = set()
    pids: list[int] = []
    if not claims_dir(catalog).is_dir():
        return taken, pids
    for path in sorted(claims_dir(catalog).glob("*.claim")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # released meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: the owner runs
                header, ids = _read(path)
                if header.get("model") == model:
                    taken.update(ids)
                    pids.append(int(header.get("pid", 0)))
                continue
            path.unlink(missing_ok=True)  # nobody holds it: its run ended without releasing it
        finally:
            os.close(fd)
    return taken, pids


def _read(path: Path) -> tuple[dict[str, object], list[str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
    except (OSError, ValueError):  # written this instant or unreadable: claims nothing
        return {}, []
    return (header if isinstance(header, dict) else {}), lines[1:]
