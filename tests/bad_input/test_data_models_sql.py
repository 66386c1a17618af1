"""Bad input to `tso-data models`, `sql`, `init` and `status`: one line, exit 2, nothing
changed (tests/bad_input/catalog_harness.py). A query without --write never writes a
file nor reads one outside the catalog."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog_harness import Case, Ctx, base_catalog, case, run_case  # noqa: E402

__all__ = ["base_catalog"]

ADD = "models add x-new --family acme --version 9"


def jl(*rows: dict[str, object]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


MODELS = [
    case("size-b-nan", ADD + " --size-b nan", "model 'x-new': --size-b must be a finite number > 0", "got nan"),
    case("size-b-inf", ADD + " --size-b inf", "--size-b must be a finite number > 0", "got inf"),
    case("size-b-minus-inf", ADD + " --size-b -inf", "--size-b must be a finite number > 0"),
    case("size-b-zero", ADD + " --size-b 0", "--size-b must be a finite number > 0"),
    case("size-b-negative", ADD + " --size-b -3", "--size-b must be a finite number > 0"),
    case("size-b-not-a-number", ADD + " --size-b big", "models add: Invalid value for '--size-b'"),
    case("version-not-orderable", "models add x-new --family acme --version beta --size-b 1", "version 'beta'", "--version-order"),
    case("version-four-parts", "models add x-new --family acme --version 1.2.3.4 --size-b 1", "version '1.2.3.4'"),
    case("version-part-too-big", "models add x-new --family acme --version 3.1000 --size-b 1", "version '3.1000'"),
    case("version-order-not-int", ADD + " --size-b 1 --version-order soon", "Invalid value for '--version-order'"),
    case("name-human", "models add human --family h --version 1", "'human' is the built-in source"),
    case("name-with-space", ["models", "add", "a b", "--family", "f", "--version", "1"], "model name 'a b'"),
    case("exists-with-other-fields", "models add acme-v1-1b --family acme --version 1 --size-b 2", "'acme-v1-1b' already exists", "--replace"),
    case("path-and-endpoint", ADD + " --path /m --endpoint http://x/v1", "give --path or --endpoint, not both"),
    case("missing-family", "models add x-new --version 1", "Missing option '--family'"),
    case("unknown-backend", ADD + " --backend tpu", "Invalid value for '--backend'"),
    case("import-duplicate-name", "models import {tmp}/m.jsonl", "m.jsonl:2: field 'name': model 'a-1' already given on line/row 1",
         files={"m.jsonl": jl({"name": "a-1", "family": "a", "version": "1"}, {"name": "a-1", "family": "a", "version": "2"})}),
    case("import-missing-family", "models import {tmp}/m.jsonl", "m.jsonl:1: field 'family'", files={"m.jsonl": jl({"name": "a-1", "version": "1"})}),
    case("import-size-nan", "models import {tmp}/m.jsonl", "m.jsonl:1: field 'size_b': expected a finite number",
         files={"m.jsonl": '{"name": "a-1", "family": "a", "version": "1", "size_b": NaN}\n'}),
    case("import-size-negative", "models import {tmp}/m.jsonl", "m.jsonl:1:", "--size-b must be a finite number > 0",
         files={"m.jsonl": jl({"name": "a-1", "family": "a", "version": "1", "size_b": -1})}),
    case("import-no-version", "models import {tmp}/m.jsonl", "m.jsonl:1: field 'version': missing", files={"m.jsonl": jl({"name": "a-1", "family": "a"})}),
    case("no-catalog-here", "models list -c {tmp}/nowhere", "no catalog here", catalog_flag=False),
]

SQL = [
    case("copy-over-a-snapshot", ["sql", "COPY (SELECT 1 AS x) TO 'snapshots/round-1/evil.parquet'"], "sql: COPY needs --write"),
    case("copy-outside", ["sql", "COPY (SELECT 1) TO '{tmp}/out.csv'"], "sql: COPY needs --write"),
    case("export-database", ["sql", "EXPORT DATABASE '{tmp}/dump'"], "sql: EXPORT needs --write"),
    case("attach", ["sql", "ATTACH '{tmp}/other.duckdb' AS o"], "sql: ATTACH needs --write"),
    case("set-external-access", ["sql", "SET enable_external_access = true"], "sql: SET needs --write"),
    case("install-extension", ["sql", "INSTALL httpfs"], "sql: LOAD needs --write"),
    case("read-outside-the-catalog", ["sql", "SELECT * FROM read_csv('{tmp}/secret.csv')"], "sql: Permission Error",
         "reads only files inside the catalog", files={"secret.csv": "a\n1\n"}),
    case("glob-outside-the-catalog", ["sql", "SELECT * FROM glob('/etc/*')"], "Permission Error"),
    case("delete-without-write", ["sql", "DELETE FROM prompts"], "sql: DELETE needs --write"),
    case("drop-without-write", ["sql", "DROP TABLE judgments"], "sql: DROP needs --write"),
    case("create-without-write", ["sql", "CREATE TABLE t AS SELECT 1"], "sql: CREATE needs --write"),
    case("update-without-write", ["sql", "UPDATE prompts SET split = 'heldout'"], "sql: UPDATE needs --write"),
    case("explain-analyze-copy", ["sql", "EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp}/x.csv'"], "sql: COPY needs --write"),
    case("copy-after-a-select", ["sql", "SELECT 1; COPY (SELECT 1) TO '{tmp}/x.csv'"], "sql: COPY needs --write"),
    case("call-checkpoint", ["sql", "CHECKPOINT"], "needs --write"),
    case("syntax-error", ["sql", "SELEC nonsense"], "sql: Parser Error"),
    case("json-and-csv", ["sql", "SELECT 1", "--json", "--csv"], "give --json or --csv, not both"),
    case("write-that-fails-rolls-back", ["sql", "--write", "DELETE FROM prompts; SELECT no_such_function()"], "sql:", "no_such_function"),
    case("max-rows-not-a-number", ["sql", "SELECT 1", "--max-rows", "many"], "Invalid value for '--max-rows'"),
]


def _drop(table: str):
    def setup(ctx: Ctx) -> None:
        ctx.sql(f"DROP TABLE {table}")
    return setup


def _garbage_db(ctx: Ctx) -> None:
    (ctx.cat / "catalog.duckdb").write_bytes(b"this is not a database")


CATALOG = [
    case("init-over-a-corrupt-database", "init {cat}", "catalog.duckdb: cannot open as a catalog database", "not a valid DuckDB",
         setup=_garbage_db, catalog_flag=False),
    case("init-on-a-file", "init {tmp}/f", "Directory", "is a file", files={"f": "x"}, catalog_flag=False),
    case("status-on-a-corrupt-database", "status", "cannot open the catalog database", setup=_garbage_db),
    case("status-after-judgments-dropped", "status", "table(s) judgments missing (dropped?)", "tso-data init", setup=_drop("judgments")),
    case("models-list-after-models-dropped", "models list", "table(s) models missing", setup=_drop("models")),
    case("sql-after-prompts-dropped", ["sql", "SELECT 1"], "table(s) prompts missing", setup=_drop("prompts")),
    case("status-unknown-base", "status --base nobody", "unknown model 'nobody'"),
    case("status-round-toml-is-a-directory", "status --round 1", "round.toml: not a file",
         setup=lambda ctx: ((ctx.cat / "round.toml").unlink(), (ctx.cat / "round.toml").mkdir())),
]

CASES: list[Case] = MODELS + SQL + CATALOG


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_models_sql_catalog_bad_input(c: Case, base_catalog: Path, tmp_path: Path) -> None:
    run_case(c, base_catalog, tmp_path)
