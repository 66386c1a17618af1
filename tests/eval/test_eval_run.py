"""`tso-data eval` end to end: missing answers generated (through a real OpenAI-compatible
server), judged, compared in both orders; nothing asked twice; bad input stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from eval_helpers import ScriptedJudge, make_catalog, replies_of, table_counts

from tso_data.catalog import Catalog
from tso_data.cli.main import cli
from tso_data.eval import EvalSpec, leaderboard, run_eval
from tso_data.eval.judging import load_pairwise_prompt, plan_pairs, reparse, run_pairwise
from tso_data.generate.factory import BackendOptions
from tso_data.judge.run import JudgeSummary

N, HELDOUT = 8, 6
FN_JUDGE = "fn:eval_helpers:length_score"


def catalog_with(tmp_path: Path, stub_url: str | None = None, **extra_models: dict[str, object]) -> Catalog:
    """'short' and 'long' answer every prompt (short / long texts); 'fresh' has no answers
    and an endpoint (the stub) when one is given."""
    models: dict[str, dict[str, object]] = {"short": {"version": "1"}, "long": {"version": "2"}, **extra_models}
    if stub_url:
        models["fresh"] = {"version": "3", "endpoint": stub_url}
    return make_catalog(tmp_path / "cat", models=models, n_prompts=N, heldout=HELDOUT,
                        answers={"short": [f"{2 * i}" for i in range(N)],
                                 "long": [f"The answer is {2 * i}, since {i} + {i} = {2 * i}." for i in range(N)]})


def cli_json(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, [*args, "--json", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_missing_answers_are_generated_then_judged_and_nothing_is_asked_twice(tmp_path: Path, verdict_stub) -> None:
    catalog = catalog_with(tmp_path, verdict_stub.base_url)
    args = ["eval", "-c", str(catalog.root), "--models", "short,long,fresh", "--judge", FN_JUDGE,
            "--baseline", "short", "--temperature", "0", "--concurrency", "4"]
    first = cli_json(*args)
    assert first["generated"] == {"fresh": HELDOUT}  # heldout prompts only, and only the model lacking them
    assert first["judged"]["written"] == {"ok": 3 * HELDOUT}
    assert len(verdict_stub.server.log) == HELDOUT
    rows = {m["model"]: m for m in first["models"]}
    assert rows["long"]["score"] > rows["short"]["score"] and rows["long"]["delta_mean"] > 0
    assert rows["short"]["delta_mean"] == 0 and rows["short"]["is_baseline"]
    assert all(rows[m]["n"] == HELDOUT for m in rows)

    again = cli_json(*args)
    assert again["generated"] == {} and again["judged"]["calls"] == 0
    assert len(verdict_stub.server.log) == HELDOUT  # no request reached the server
    assert again["models"] == first["models"]


def test_pairwise_verdicts_in_both_orders_and_alpaca_eval_columns(tmp_path: Path, verdict_stub) -> None:
    """The stub judge prefers the longer reply whichever position it is in: 'long' wins
    every prompt in both orders; the stored preferences are mapped back per order."""
    catalog = catalog_with(tmp_path, **{"judge-lm": {"family": "judge", "endpoint": verdict_stub.base_url}})
    board = cli_json("eval", "-c", str(catalog.root), "--models", "short,long", "--judge", "judge-lm",
                     "--baseline", "short", "--pairwise", "--concurrency", "4", "--stored-only")
    assert board["models"][0]["n_pairwise"] is None  # stored-only: nothing compared yet
    run = cli_json("eval", "-c", str(catalog.root), "--models", "short,long", "--judge", "judge-lm",
                   "--baseline", "short", "--pairwise", "--concurrency", "4", "--rubric", "overall")
    assert run["compared"]["written"] == {"ok": 2 * HELDOUT}
    long_row = next(m for m in run["models"] if m["model"] == "long")
    assert (long_row["win_rate"], long_row["n_wins"], long_row["n_pairwise"], long_row["discrete_win_rate"]) == (
        100.0, HELDOUT, HELDOUT, 100.0)
    assert long_row["avg_length"] > 20 and long_row["lc_win_rate"] is not None
    assert run["difficulty"] == "estimated from 1 model"
    stored = catalog.arrow(
        "SELECT shown_first, preference, source_1, source_2 FROM verdicts ORDER BY shown_first").to_pylist()
    assert {(r["shown_first"], r["preference"], r["source_1"], r["source_2"]) for r in stored} == {
        (1, 2.0, "short", "long"), (2, 2.0, "short", "long")}
    shown = [replies_of(entry.messages) for entry in verdict_stub.server.log if "[Reply A]" in entry.key]
    assert sum(len(a) > len(b) for a, b in shown) == HELDOUT  # the long reply shown first half the time
    # both orders are stored: a rerun asks nothing
    again = cli_json("eval", "-c", str(catalog.root), "--models", "short,long", "--judge", "judge-lm",
                     "--baseline", "short", "--pairwise", "--concurrency", "4")
    assert again["compared"]["calls"] == 0 and again["judged"]["calls"] == 0


def test_a_judge_with_position_bias_only_gives_draws(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path)
    prompt = load_pairwise_prompt()
    summary = JudgeSummary(judge="biased")
    items = plan_pairs(catalog, ["long"], "short", "heldout", "biased", prompt, 3, summary)
    assert len(items) == 2 * HELDOUT
    backend = ScriptedJudge(lambda request: "Reply A is better. [[A]]")
    run_pairwise(catalog, items, backend, judge="biased", judge_version=None, prompt=prompt,
                 params=EvalSpec(judge="x").judging, max_attempts=3, summary=summary, progress=False)
    row = leaderboard(catalog, judge="biased", models=["long"], baseline="short", pairwise=True).table.filter(
        is_baseline=False).to_dicts()[0]
    assert (row["win_rate"], row["n_draws"], row["n_wins"], row["n_losses"]) == (50.0, HELDOUT, 0, 0)


def test_unparsed_verdicts_are_retried_kept_as_text_and_reparsed_without_calls(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path)
    prompt = load_pairwise_prompt()
    backend = ScriptedJudge(lambda request: "Both replies are fine, I cannot choose.")
    summary = JudgeSummary(judge="shy")
    items = plan_pairs(catalog, ["long"], "short", "heldout", "shy", prompt, 2, summary)
    run_pairwise(catalog, items, backend, judge="shy", judge_version=None, prompt=prompt,
                 params=EvalSpec(judge="x").judging, max_attempts=2, summary=summary, progress=False)
    assert len(backend.requests) == 2 * 2 * HELDOUT  # every verdict asked twice, with different seeds
    assert len({r.params.seed for r in backend.requests}) == len(backend.requests)
    rows = catalog.arrow("SELECT status, preference, attempts, raw_text FROM verdicts").to_pylist()
    assert all(r["status"] == "unparsed" and r["preference"] is None and r["attempts"] == 2 for r in rows)
    assert plan_pairs(catalog, ["long"], "short", "heldout", "shy", prompt, 2, JudgeSummary(judge="shy")) == []

    with catalog.connect(read_only=False) as con:  # a parser that now reads these texts
        con.execute("UPDATE verdicts SET raw_text = raw_text || ' Verdict: B'")
    assert reparse(catalog, "shy") == {"unparsed->ok": 2 * HELDOUT}
    stored = catalog.arrow("SELECT shown_first, preference FROM verdicts WHERE status = 'ok'").to_pylist()
    assert {(r["shown_first"], r["preference"]) for r in stored} == {(1, 2.0), (2, 1.0)}
    assert len(backend.requests) == 2 * 2 * HELDOUT


@pytest.mark.parametrize("args,message", [
    (["--models", "short,nopath", "--judge", FN_JUDGE],
     "error: model 'nopath' lacks answers to 6 prompt(s) of split 'heldout': "
     "model 'nopath' has neither a path nor an endpoint"),
    (["--models", "short", "--baseline", "nopath", "--judge", FN_JUDGE],
     "error: baseline 'nopath' has no answers on split 'heldout' (and no path or endpoint to generate them)"),
    (["--models", "short", "--baseline", "nopath", "--judge", FN_JUDGE, "--stored-only"],
     "error: baseline 'nopath' has no answers on split 'heldout'"),
    (["--models", "short", "--judge", "no-such-judge"],
     "error: --judge 'no-such-judge' is neither a registered model nor fn:module:function"),
    (["--models", "short", "--baseline", "long", "--judge", FN_JUDGE, "--pairwise"],
     "error: --pairwise needs a judge model that compares two answers"),
    (["--models", "short", "--judge", FN_JUDGE, "--split", "test"], "error: --split 'test': no prompts in that split"),
])
def test_bad_input_is_one_line_exit_2_and_stores_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    catalog = catalog_with(tmp_path, nopath={"version": "4"})
    before = table_counts(catalog)
    result = CliRunner().invoke(cli, ["eval", "-c", str(catalog.root), *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1
    assert table_counts(catalog) == before


def test_files_and_a_catalog_older_than_the_verdicts_table(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path)
    with catalog.connect(read_only=False) as con:
        con.execute("DROP TABLE verdicts")  # as made before this table existed
    status = CliRunner().invoke(cli, ["status", "-c", str(catalog.root), "--json"])
    assert status.exit_code == 0, status.output
    result = CliRunner().invoke(cli, ["eval", "-c", str(catalog.root), "--family", "t", "--judge", FN_JUDGE,
                                      "--baseline", "short", "--csv", str(tmp_path / "lb.csv"), "--plot",
                                      str(tmp_path / "lb.png"), "--categories", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "leaderboard — judge fn:eval_helpers:length_score" in result.output and "per category" in result.output
    assert (tmp_path / "lb.csv").read_text().splitlines()[0].startswith("model,family,version")
    assert (tmp_path / "lb.png").read_bytes()[:4] == b"\x89PNG"
    board = leaderboard(catalog, judge=FN_JUDGE, family="t", baseline="short", pairwise=True)
    assert board.table.get_column("n_pairwise").null_count() == 2  # no verdicts table yet: nothing compared


def test_run_eval_from_python(tmp_path: Path) -> None:
    catalog = catalog_with(tmp_path)
    run = run_eval(catalog.root, EvalSpec(judge=FN_JUDGE, family="t", baseline="short"),
                   BackendOptions(), progress=False)
    assert [r["model"] for r in run.leaderboard.table.to_dicts()] == ["long", "short"]
    assert run.judged is not None and run.judged.statuses["ok"] == 2 * HELDOUT


def test_pair_messages_show_each_order_and_whole_multi_turn_answers() -> None:
    from tso_data.eval.judging import PairItem, pair_messages

    prompt = load_pairwise_prompt()
    messages = [{"role": "user", "content": "Name a prime."}, {"role": "user", "content": "Another one?"}]
    item = PairItem("v", "p", "base", "t1", "model", "t2", 2, messages, ["2", "3"], ["5", "7"])
    a, b = replies_of(pair_messages(item, prompt))
    assert a == "[Reply to turn 1]\n5\n\n[Reply to turn 2]\n7"  # answer 2 (the model) shown first
    assert b == "[Reply to turn 1]\n2\n\n[Reply to turn 2]\n3"
    assert "[User, turn 2]\nAnother one?" in pair_messages(item, prompt)[-1]["content"]
    single = PairItem("v", "p", "base", "t1", "model", "t2", 1, messages[:1], ["2"], ["5"])
    assert replies_of(pair_messages(single, prompt)) == ("2", "5")
