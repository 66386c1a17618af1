"""The bad-input corpus of `tso-data` (tests/bad_input/test_data_*.py): one table-driven
check for every case — exit status 2, exactly one line on stderr (``error: ...``) that
names the file/line/field or the flag, nothing on stdout, and nothing changed: the same
files with the same bytes under the catalog directory and the same row count per table.

The base catalog (the demo catalog's sources ingested through the CLI, a round-1 snapshot,
two models behind a local endpoint) is built once per session and copied per case.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from tso_data.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "catalogs" / "demo"
# never answers: the cases fail before any request is sent
DEAD_ENDPOINT = "http://127.0.0.1:9/v1"


@dataclass(frozen=True)
class Ctx:
    """Where a case runs: its catalog copy and a scratch directory outside it."""

    cat: Path
    tmp: Path

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def jsonl(self, name: str, rows: list[dict[str, object]]) -> Path:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in rows))

    def sql(self, query: str) -> None:
        """Change the catalog before the case (its state is taken after the setup)."""
        with duckdb.connect(str(self.cat / "catalog.duckdb")) as con:
            con.execute(query)


@dataclass(frozen=True)
class Case:
    """``args`` may hold ``{cat}`` and ``{tmp}``; ``-c {cat}`` is added unless
    ``catalog_flag`` is False. ``files`` are written to ``{tmp}`` first, then ``setup``
    runs; ``expect`` are fragments the one error line must contain."""

    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    setup: Callable[[Ctx], None] | None = None
    catalog_flag: bool = True
    env: Mapping[str, str | None] = field(default_factory=dict)


def case(id: str, args: str | list[str], *expect: str, **kw: object) -> Case:
    """Shorthand: ``args`` as one string is split on spaces."""
    parts = tuple(args.split()) if isinstance(args, str) else tuple(args)
    return Case(id, parts, expect, **kw)  # type: ignore[arg-type]


# -- the base catalog ------------------------------------------------------------------

_BASE: dict[str, Path] = {}


def invoke(*args: str, env: Mapping[str, str | None] | None = None) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=dict(env or {}))


def _ok(*args: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]


def build_base(root: Path) -> Path:
    """The demo catalog (models, prompts, human answers, 4 samples per model, judge
    scores), its round.toml, a built round-1 snapshot, and two endpoint models."""
    cat, src = str(root), DEMO / "source"
    _ok("init", cat)
    _ok("models", "import", str(src / "models.jsonl"), "-c", cat)
    _ok("ingest", "prompts", str(src / "prompts.jsonl"), "-c", cat, "--set", "source=demo")
    _ok("ingest", "answers", str(src / "answers.jsonl"), "-c", cat, "--prompt-source", "demo")
    _ok("ingest", "responses", str(src / "responses.jsonl"), "-c", cat, "--prompt-source", "demo")
    _ok("ingest", "judgments", str(src / "judgments.jsonl"), "-c", cat, "--prompt-source", "demo",
        "--set", "judge=demo-checker", "--set", "rubric=overall", "--scale", "1-10")
    for name in ("stub-m", "judge-m"):
        _ok("models", "add", name, "--family", name.split("-")[0], "--version", "1", "--size-b", "1",
            "--endpoint", DEAD_ENDPOINT, "-c", cat)
    shutil.copy(DEMO / "round.toml", root / "round.toml")
    _ok("build", "--round", "1", "-c", cat)
    return root


@pytest.fixture(scope="session")
def base_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session, whichever test module asks first."""
    if "root" not in _BASE:
        _BASE["root"] = build_base(tmp_path_factory.mktemp("bad-input-base") / "cat")
    return _BASE["root"]


# -- running a case --------------------------------------------------------------------


def state(root: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Every file and directory under ``root`` with its content hash, and the row count
    of every table the database holds (read-only: reading changes nothing)."""
    files: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        files[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    counts: dict[str, int] = {}
    db = root / "catalog.duckdb"
    try:
        with duckdb.connect(str(db), read_only=True) as con:
            names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
            for name in names:
                counts[name] = con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]
    except duckdb.Error:
        counts["<unreadable>"] = -1  # a case that damages the file on purpose
    return files, counts


def run_case(c: Case, base: Path, tmp: Path) -> str:
    """Run case ``c`` on a copy of ``base``; assert it fails cleanly; return the line."""
    cat = tmp / "cat"
    shutil.copytree(base, cat)
    scratch = tmp / "in"
    scratch.mkdir()
    ctx = Ctx(cat, scratch)
    for name, content in c.files.items():
        ctx.write(name, content)
    if c.setup is not None:
        c.setup(ctx)
    args = [a.format(cat=cat, tmp=scratch) for a in c.args]
    if c.catalog_flag:
        args += ["-c", str(cat)]
    before = state(cat)
    env = {"TSO_LOCK_TIMEOUT_S": "1", "OPENAI_API_KEY": None, **c.env}
    cwd = os.getcwd()
    try:
        os.chdir(scratch)  # relative paths in a case are the scratch directory's
        result = invoke(*args, env=env)
    finally:
        os.chdir(cwd)
    out, err = result.stdout, result.stderr  # type: ignore[attr-defined]
    lines = err.strip().splitlines()
    assert result.exit_code == 2, f"exit {result.exit_code}\nstdout: {out}\nstderr: {err}"  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr is not one error line:\n{err}"
    assert out == "", f"stdout should be empty:\n{out}"
    for fragment in c.expect:
        assert fragment.format(cat=cat, tmp=scratch) in lines[0], f"{fragment!r} not in: {lines[0]}"
    assert state(cat) == before, "the catalog changed"
    return lines[0]
