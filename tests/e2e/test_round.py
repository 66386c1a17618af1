"""The CPU example's QUICK mode (examples/tso_cpu/run.sh with QUICK=1: the matrix, one TSO
round) end to end through the real CLIs, then each step's output checked against the catalog,
and the round's held-out improvement checked against its base (docs/design.md, "7. The CPU
testbed")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tso_data.catalog import Catalog
from tso_data.examples.arith import score

REPO = Path(__file__).resolve().parents[2]
RUN_SH = REPO / "examples" / "tso_cpu" / "run.sh"
N_TRAIN, N_HELDOUT, SAMPLES = 600, 300, 4  # QUICK=1's sizes (run.sh)
CELLS = ["arith-v1-s", "arith-v1-l", "arith-v2-s", "arith-v2-l"]
JUDGE = "fn:tso_data.examples.arith:score"
# Round 1 must beat its base on the same held-out prompts by this many paired standard errors.
# The run is deterministic for a seed on one machine; the README reports the rate over seeds.
MIN_DELTA_IN_SE = 3.0


def _env(work: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        WORK=str(work), QUICK="1", PYTHON=sys.executable,
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        PYTHONPATH=os.pathsep.join(
            [str(REPO / "packages" / "tso-data" / "src"), str(REPO / "packages" / "tso-train" / "src")]
        ),
    )
    for key in ("ROUNDS", "N_TRAIN", "N_HELDOUT", "N_SFT", "EPOCHS_V1", "EPOCHS_V2", "EPOCHS_V2_L", "SAMPLES",
                "FIT_EPOCHS", "FIT_ARGS", "SEED"):
        env.pop(key, None)  # the test runs QUICK mode as shipped, whatever the caller's shell holds
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("tso-cpu")
    proc = subprocess.run(["bash", str(RUN_SH)], env=_env(work), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"run.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    (work / "run.log").write_text(proc.stdout)
    return work


@pytest.fixture(scope="module")
def catalog(work: Path) -> Catalog:
    return Catalog.open(work / "catalog")


def test_every_cell_answered_every_prompt_once(catalog: Catalog) -> None:
    rows = catalog.arrow(
        "SELECT m.name, count(r.response_id) AS n, count(DISTINCT r.prompt_id) AS prompts "
        "FROM models m JOIN responses r ON r.model = m.name "
        "WHERE CAST(json_extract(r.sampling, '$.temperature') AS DOUBLE) = 0 GROUP BY m.name"
    ).to_pylist()
    greedy = {r["name"]: (r["n"], r["prompts"]) for r in rows}
    for cell in CELLS:
        assert greedy[cell] == (N_TRAIN + N_HELDOUT, N_TRAIN + N_HELDOUT), cell
    # the round-1 base also sampled SAMPLES answers per train prompt for the base pairs
    sampled = catalog.scalar(
        "SELECT count(*) FROM responses r JOIN prompts p USING (prompt_id) "
        "WHERE r.model = 'arith-v2-s' AND p.split = 'train' "
        "AND CAST(json_extract(r.sampling, '$.temperature') AS DOUBLE) > 0"
    )
    assert sampled == N_TRAIN * SAMPLES


def test_every_answer_judged_by_the_verifier(catalog: Catalog) -> None:
    unjudged = catalog.scalar(
        "SELECT count(*) FROM responses r WHERE r.model IN ('arith-v1-s','arith-v1-l','arith-v2-s','arith-v2-l') "
        "AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.target_id = r.response_id AND j.status = 'ok' AND j.judge = ?)",
        [JUDGE],
    )
    assert unjudged == 0
    human = catalog.arrow(
        "SELECT min(score) AS lo, count(*) AS n FROM judgments WHERE source = 'human' AND judge = ?", [JUDGE]
    ).to_pylist()[0]
    assert human == {"lo": 10.0, "n": N_TRAIN + N_HELDOUT}  # reference answers get full marks
    # stored scores are exactly what the verifier gives for the stored texts
    sample = catalog.arrow(
        "SELECT p.messages, r.turns, j.score FROM judgments j JOIN responses r ON r.response_id = j.target_id "
        "JOIN prompts p ON p.prompt_id = r.prompt_id WHERE j.judge = ? ORDER BY j.judgment_id LIMIT 40",
        [JUDGE],
    ).to_pylist()
    assert len(sample) == 40
    for row in sample:
        assert row["score"] == score(row["messages"], row["turns"])


def test_snapshot_matches_the_round_config(work: Path, catalog: Catalog) -> None:
    snaps = catalog.arrow("SELECT * FROM snapshots WHERE round = 1").to_pylist()
    assert len(snaps) == 1
    snap = snaps[0]
    config = json.loads(snap["config"])
    assert snap["base_model"] == config["base_model"] == "arith-v2-s"
    assert config["pairs"] == N_TRAIN and config["judge"] == JUDGE
    table = pq.read_table(catalog.root / snap["path"])
    kinds = table.column("kind").to_pylist()
    assert table.num_rows == snap["n_pairs"] == snap["n_matrix"] + snap["n_base"]
    assert kinds.count("matrix") == snap["n_matrix"] > 0 and kinds.count("base") == snap["n_base"]
    assert snap["n_pairs"] <= N_TRAIN
    meta = table.schema.metadata
    assert meta[b"tso.snapshot_id"].decode() == snap["snapshot_id"]
    for row in table.select(["kind", "chosen_source", "rejected_source", "chosen", "rejected"]).to_pylist():
        if row["kind"] == "matrix":
            assert row["chosen_source"] in {"human", "arith-v2-l"}  # newest-largest + human
            assert row["rejected_source"] in {"arith-v1-s", "arith-v1-l"}  # older-or-smaller, never the base
        else:
            assert row["chosen_source"] == row["rejected_source"] == "arith-v2-s"
        assert row["chosen"] != row["rejected"]
    tau = catalog.scalar(
        "SELECT avg(j.score) FROM judgments j JOIN responses r ON r.response_id = j.target_id "
        "JOIN prompts p ON p.prompt_id = r.prompt_id WHERE r.model = 'arith-v2-s' AND p.split = 'train' AND j.status = 'ok'"
    )
    assert snap["tau"] == pytest.approx(tau)


def test_policy_checkpoint_loads_and_is_registered_as_next_version(work: Path, catalog: Catalog) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = work / "runs" / "round-1" / "final"
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    row = catalog.arrow("SELECT * FROM models WHERE name = 'arith-v3-s'").to_pylist()[0]
    base = catalog.arrow("SELECT * FROM models WHERE name = 'arith-v2-s'").to_pylist()[0]
    assert (row["family"], row["version"], row["size_b"]) == ("arith", "3", base["size_b"])
    assert Path(row["path"]).resolve() == final.resolve()


def test_report_has_the_heldout_score_of_each_cell_and_round(work: Path) -> None:
    report = json.loads((work / "report" / "report.json").read_text())
    for png in ("heldout.png", "training.png"):
        assert (work / "report" / png).stat().st_size > 10_000, png
    (round1,) = report["rounds"]
    assert round1["base"] == "arith-v2-s" and round1["policy"] == "arith-v3-s"
    for name in ("human", *CELLS):
        assert report["matrix"][name]["n"] == N_HELDOUT
        assert 1.0 <= report["matrix"][name]["mean"] <= 10.0
    assert report["matrix"]["human"]["mean"] == 10.0
    assert round1["policy_heldout"]["n_paired"] == N_HELDOUT
    assert round1["fit"]["steps"] > 0


def test_round_one_improves_its_base_on_heldout_prompts(work: Path) -> None:
    report = json.loads((work / "report" / "report.json").read_text())
    (round1,) = report["rounds"]
    delta, se = round1["policy_heldout"]["delta"], round1["policy_heldout"]["delta_se"]
    assert se > 0
    assert delta >= MIN_DELTA_IN_SE * se, f"round 1: {delta:+.3f} ± {se:.3f} held-out points"
    assert round1["policy_heldout"]["mean"] == pytest.approx(round1["base_heldout"]["mean"] + delta)


def test_the_testbed_orders_the_matrix_as_the_method_assumes(work: Path) -> None:
    checks = json.loads((work / "report" / "report.json").read_text())["checks"]
    assert checks["newest_largest_above_base"] and checks["base_above_older_or_smaller"]
    mix = checks["base_sample_mix"]
    assert mix["prompts"] == N_TRAIN and mix["samples_per_prompt"] == SAMPLES
    assert 0.0 < mix["right_share"] < 1.0


def test_rerunning_the_runner_resumes_and_adds_nothing(work: Path, catalog: Catalog) -> None:
    counts_sql = ("SELECT (SELECT count(*) FROM responses), (SELECT count(*) FROM judgments), "
                  "(SELECT count(*) FROM snapshots), (SELECT count(*) FROM models)")
    before = catalog.arrow(counts_sql).to_pylist()
    weights = (work / "runs" / "round-1" / "final" / "model.safetensors").read_bytes()
    proc = subprocess.run(["bash", str(RUN_SH)], env=_env(work), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to do" in proc.stdout and "fit arith-v2-s" not in proc.stdout
    assert catalog.arrow(counts_sql).to_pylist() == before
    assert (work / "runs" / "round-1" / "final" / "model.safetensors").read_bytes() == weights


def test_runner_stops_at_the_first_failing_step(tmp_path: Path) -> None:
    proc = subprocess.run(["bash", str(RUN_SH)], env=_env(tmp_path, PYTHON="false"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "error: step 'prepare task files, tokenizer, untrained cells' failed" in proc.stderr
