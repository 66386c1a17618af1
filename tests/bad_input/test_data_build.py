"""Bad input to `tso-data build` (flags, round.toml, the catalog around it) and `scores`:
one line naming the flag or the round.toml field, exit 2, nothing changed — no snapshot
file, no `snapshots` row (tests/bad_input/catalog_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog_harness import Case, Ctx, base_catalog, case, run_case  # noqa: E402

__all__ = ["base_catalog"]

B = "build --round 1"


def _toml(text: str, append: bool = True):
    def setup(ctx: Ctx) -> None:
        path = ctx.cat / "round.toml"
        path.write_text((path.read_text(encoding="utf-8") if append else "") + text, encoding="utf-8")
    return setup


def _round_toml_dir(ctx: Ctx) -> None:
    (ctx.cat / "round.toml").unlink()
    (ctx.cat / "round.toml").mkdir()


def _snapshots_file(ctx: Ctx) -> None:
    import shutil

    shutil.rmtree(ctx.cat / "snapshots")
    (ctx.cat / "snapshots").write_text("not a directory", encoding="utf-8")


def _drop(table: str):
    def setup(ctx: Ctx) -> None:
        ctx.sql(f"DROP TABLE {table}")
    return setup


def _unordered_model(ctx: Ctx) -> None:
    ctx.sql("INSERT INTO models (name, kind, family, version, version_order, size_b, added_at) "
            "VALUES ('acme-chat', 'model', 'acme', 'chat', NULL, 3, now())")


FLAGS = [
    case("tau-nan", B + " --tau nan", "--tau nan: τ must be a finite number"),
    case("tau-inf", B + " --tau inf", "--tau inf: τ must be a finite number"),
    case("tau-minus-inf", B + " --tau -inf", "--tau -inf"),
    case("tau-above-every-score", B + " --tau 1000", "no pair could be built: τ = 1000 (fixed)", "no base answer is a positive"),
    case("tau-below-every-score", B + " --tau -5 --matrix-ratio 0", "τ = -5 (fixed)", "no base answer is a negative"),
    case("split-unknown", B + " --split nope", "split 'nope' is unknown", "'heldout', 'train'"),
    case("round-zero", "build --round 0", "--round must be >= 1"),
    case("round-not-a-number", "build --round one", "Invalid value for '--round'"),
    case("seed-negative", B + " --seed -1", "--seed -1: expected an integer from 0 to 2^63 - 1"),
    case("seed-2-pow-63", B + f" --seed {2**63}", f"--seed {2**63}"),
    case("pairs-zero", B + " --pairs 0", "--pairs 0: expected an integer >= 1"),
    case("max-per-prompt-zero", B + " --max-per-prompt 0", "--max-per-prompt 0"),
    case("matrix-ratio-above-one", B + " --matrix-ratio 1.5", "--matrix-ratio 1.5: expected a number between 0 and 1"),
    case("matrix-ratio-nan", B + " --matrix-ratio nan", "--matrix-ratio nan"),
    case("base-model-unknown", B + " --base-model nobody", "base_model 'nobody' is not in the models table"),
    case("base-model-human", B + " --base-model human", "base_model 'human' is a human source"),
    case("negative-unknown", B + " --negative nobody", "negative.sources: unknown source 'nobody'"),
    case("positive-weight-malformed", B + " --positive-weight human", "--positive-weight 'human': expected NAME=WEIGHT"),
    case("positive-weight-negative", B + " --positive-weight human=-1", "--positive-weight 'human=-1': a weight is a finite number >= 0"),
    case("negative-weight-nan", B + " --negative-weight acme-v1-1b=nan", "--negative-weight 'acme-v1-1b=nan'"),
    case("tau-mode-unknown", B + " --tau-mode median", "Invalid value for '--tau-mode'"),
    case("judge-unknown", B + " --judge nobody", "nobody"),
    case("strict-shortfall", B + " --pairs 100000 --strict", "--strict: fewer"),
    case("config-missing", B + " --config {tmp}/none.toml", "none.toml: config file not found"),
]

ROUND_TOML = [
    case("round-toml-is-a-directory", B, "round.toml: not a file", setup=_round_toml_dir),
    case("round-toml-invalid", B, "round.toml: invalid TOML", setup=_toml("pairs = = 3\n")),
    case("round-toml-unknown-key", B, "round.toml: unknown key 'paris'", setup=_toml('base_model = "acme-v2-1b"\nparis = 3\n', append=False)),
    case("round-toml-seed-negative", B, "field 'seed': expected an integer from 0 to 2^63 - 1", setup=_toml('base_model = "acme-v2-1b"\nseed = -1\n', append=False)),
    case("round-toml-tau-nan", B, "field 'tau.value': τ must be a finite number", setup=_toml('[tau]\nmode = "fixed"\nvalue = nan\n')),
    case("round-toml-tau-inf", B, "field 'tau.value'", setup=_toml('[tau]\nmode = "fixed"\nvalue = inf\n')),
    case("round-toml-pairs-text", B, "field 'pairs': expected a positive integer", setup=_toml('base_model = "acme-v2-1b"\npairs = "many"\n', append=False)),
    case("round-toml-deep", B, "round.toml: invalid TOML", setup=_toml("x = " + "[" * 100_000 + "]" * 100_000 + "\n")),
    case("round-toml-weight-negative", B, "round.toml: positive.weights: weight of 'human' is -1.0",
         setup=_toml('base_model = "acme-v2-1b"\n[positive]\nweights = { human = -1 }\n', append=False)),
    case("round-toml-no-base", B, "field 'base_model': required", setup=_toml("seed = 1\n", append=False)),
    case("round-2-without-its-table", "build --round 2", "no [round.2] table (the file has [round.1])", "--base-model",
         setup=_toml('\n[round.1]\nbase_model = "acme-v2-1b"\n')),
    case("round-table-not-a-number", B, "[round.one]: expected a table named by a round number", setup=_toml('\n[round.one]\nseed = 1\n')),
    case("rule-finds-no-orderable-base", B + " --base-model acme-chat", "its version is not orderable", "--version-order",
         setup=_unordered_model),
]

CATALOG = [
    case("snapshots-is-a-file", B, "cannot create the snapshot directory", "snapshots is a file, not a directory", setup=_snapshots_file),
    case("judgments-dropped", B, "table(s) judgments missing", setup=_drop("judgments")),
    case("snapshots-table-dropped", B, "table(s) snapshots missing", setup=_drop("snapshots")),
    case("snapshot-show-unknown", "snapshots show ffff", "no snapshot 'ffff'"),
    case("scores-unknown-split", "scores --round 1 --split nope", "split 'nope' is unknown"),
    case("scores-without-base", "scores", "--base MODEL or --round R"),
]

CASES: list[Case] = FLAGS + ROUND_TOML + CATALOG


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_build_bad_input(c: Case, base_catalog: Path, tmp_path: Path) -> None:
    run_case(c, base_catalog, tmp_path)
