"""The harness of the trainer's bad-input corpus (tests/bad_input/test_train_*.py).

A case names a command (`fit`, `sft`, `plot`), its arguments over a workspace of good inputs,
an optional damage to apply first, and the fragments the one error line must hold. Running a
case checks what the project promises for bad input: exit status 2, exactly one line on stderr
(``error: …``) naming the flag, file, row or line, nothing on stdout, no model loaded (the
loader is replaced by one that fails the test) and nothing changed (every file of the
workspace and of the model, by hash, before and after).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]


def _train_fixtures():
    """tests/train/conftest.py's snapshot writer (one definition of the snapshot layout)."""
    spec = importlib.util.spec_from_file_location("train_conftest_for_bad_input", REPO / "tests/train/conftest.py")
    module = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


TRAIN = _train_fixtures()
U = lambda c: {"role": "user", "content": c}  # noqa: E731
A = lambda c: {"role": "assistant", "content": c}  # noqa: E731


def good_pairs(n: int = 8, salt: str = "") -> list[dict]:
    return [{"prompt": [U(f"What is {i} plus {i}?{salt}")], "chosen": [A(f"It is {2 * i}.")],
             "rejected": [A(f"It is {2 * i + 1}, I think.")]} for i in range(n)]


def write_snapshot(path: Path, pairs: list[dict], **kw) -> Path:
    return TRAIN.write_snapshot(path, pairs, **kw)


def write_plain_pairs(path: Path, pairs: list[dict]) -> Path:
    """A plain TRL preference file (no tso.* metadata): named by its content, not an id."""
    columns = ("prompt", "chosen", "rejected")
    pq.write_table(pa.table({c: pa.array([p[c] for p in pairs], type=TRAIN.MESSAGES) for c in columns}), path)
    return path


def write_conversations(path: Path, n: int = 8) -> Path:
    convs = [[U(f"Rate answer {i}."), A(f"Accurate. Score: {i % 10}")] for i in range(n)]
    pq.write_table(pa.table({"messages": convs}), path)
    return path


@dataclass(frozen=True)
class Workspace:
    """Copies of good inputs and finished runs for one case (damage them freely)."""

    root: Path
    model: Path  # shared, read-only: hashed, never copied

    @property
    def snapshot(self) -> Path:
        return self.root / "snap.parquet"

    @property
    def other_snapshot(self) -> Path:
        return self.root / "other.parquet"

    @property
    def run(self) -> Path:  # a finished fit run (see FIT_RUN_FLAGS), with its last checkpoint
        return self.root / "run"

    @property
    def sft_data(self) -> Path:
        return self.root / "sft.parquet"

    @property
    def sft_run(self) -> Path:  # an sft run (see SFT_RUN_FLAGS) with a checkpoint at step 1
        return self.root / "sft-run"

    @property
    def out(self) -> Path:  # a run directory that does not exist yet
        return self.root / "new-run"


# the settings the workspace's runs were trained with (a resume with these is accepted)
FIT_RUN_FLAGS = ["--loss", "dpo", "--parts", "1", "--epochs", "1", "--global-batch", "4", "--micro-batch", "4",
                 "--lr", "1e-3", "--max-length", "128", "--save-every", "1"]
SFT_RUN_FLAGS = ["--epochs", "1", "--global-batch", "4", "--micro-batch", "4", "--lr", "1e-3", "--save-every", "1"]


def build_templates(root: Path, model: Path) -> Path:
    """Good inputs and two real finished runs (fit and sft), made once per session. The runs
    train in their own processes: a fit in this one would leave its process group and its
    RANK/MASTER_PORT variables behind for every later test's subprocesses."""
    root.mkdir(parents=True, exist_ok=True)
    write_snapshot(root / "snap.parquet", good_pairs())
    write_plain_pairs(root / "other.parquet", good_pairs(salt=" Please answer."))
    write_conversations(root / "sft.parquet")
    for command in (["fit", str(root / "snap.parquet"), "--model", str(model), "--out", str(root / "run"),
                     *FIT_RUN_FLAGS],
                    ["sft", str(root / "sft.parquet"), "--model", str(model), "--out", str(root / "sft-run"),
                     *SFT_RUN_FLAGS]):
        proc = subprocess.run([sys.executable, "-m", "tso_train.cli", *command], env=TRAIN.env_for_subprocess(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def make_workspace(template: Path, dest: Path, model: Path) -> Workspace:
    shutil.copytree(template, dest, symlinks=True)
    return Workspace(dest, model)


def tree_hashes(*roots: Path) -> dict[str, str]:
    """Every file (and symlink target) under the roots, by content hash."""
    out: dict[str, str] = {}
    for root in roots:
        for f in sorted(root.rglob("*")):
            key = str(f)
            if f.is_symlink():
                out[key] = "-> " + str(f.readlink())
            elif f.is_file():
                out[key] = hashlib.sha256(f.read_bytes()).hexdigest()
            elif f.is_dir():
                out[key] = "dir"
    return out


@dataclass(frozen=True)
class Case:
    id: str
    command: str  # fit | sft | plot | tiny-model
    args: Callable[[Workspace], list]  # the command's arguments
    expect: tuple[str, ...]  # fragments of the one error line ("{ws}" is replaced by the workspace)
    damage: Callable[[Workspace], object] | None = None  # applied to the workspace before hashing


def fit_args(ws: Workspace, *flags, snapshot: Path | None = None, out: Path | None = None) -> list[str]:
    return ["fit", str(snapshot or ws.snapshot), "--model", str(ws.model), "--out", str(out or ws.out),
            *FIT_RUN_FLAGS, *map(str, flags)]


def resume_args(ws: Workspace, *flags, snapshot: Path | None = None) -> list[str]:
    """`fit --resume` of the workspace's run with some flags changed (later flags win in click)."""
    return fit_args(ws, *flags, "--resume", snapshot=snapshot, out=ws.run)


def sft_args(ws: Workspace, *flags, data: Path | None = None, out: Path | None = None) -> list[str]:
    return ["sft", str(data or ws.sft_data), "--model", str(ws.model), "--out", str(out or ws.out),
            *SFT_RUN_FLAGS, *map(str, flags)]


def rewrite_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def truncate_file(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])


def only_checkpoint_file(run: Path) -> Path:
    tag = (run / "checkpoints" / "latest").read_text().strip()
    return next(f for f in (run / "checkpoints" / tag).iterdir() if f.suffix == ".pt")


def check_refused(result, ws: Workspace, before: dict[str, str], case: Case) -> None:
    """What every bad input must give; the message in the assertion explains a failure."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in case.expect:
        fragment = fragment.replace("{ws}", str(ws.root))
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert result.stdout == "", result.stdout
    assert tree_hashes(ws.root, ws.model) == before, "the command changed files"
