"""Small file helpers: atomic writes and content digests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader (or a crash) sees the old file or the new one,
    never a half-written one: a temporary file beside it, fsync, rename.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write_text(p, "one"); atomic_write_text(p, "two"); p.read_text()
    'two'
    >>> sorted(x.name for x in p.parent.iterdir())
    ['a.txt']
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex, first 16 characters).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a.bin"; _ = p.write_bytes(b"abc")
    >>> file_digest(p)
    'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]
