"""`tso-data build` on catalogs made of real third-party data (../shared/data), checked by
independent queries; the CLI; the snapshot read by `datasets` and TRL."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from catalog_rows import add_judgments, add_models, add_prompts, add_responses, read_jsonl
from click.testing import CliRunner

from tso_data.catalog import Catalog
from tso_data.cli.main import cli
from tso_data.pairs.config import load_round_config
from tso_data.pairs.run import plan_round, write_round

INSTRUCT = ["davinci", "text-davinci-001", "text-davinci-002", "text-davinci-003"]
FINE_TUNES = ["davinci-t0-ft", "davinci-superni-ft", "davinci-self-instruct", "davinci-self-instruct-and-superni-ft"]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def cross_version(shared_data: Path, tmp_path_factory) -> Catalog:
    """self_instruct_user_oriented: human answers + the GPT-3 line davinci < 001 < 002 < 003
    (all 175B here), ingested with the ingest CLI. The base is a hypothetical small v3 policy
    (no answers, matrix pairs only), so the positives are human + text-davinci-003 and the
    negatives the three older versions; the davinci fine-tunes are another family."""
    d = shared_data / "self_instruct_user_oriented"
    catalog = Catalog.init(tmp_path_factory.mktemp("si") / "cat")
    add_models(catalog, [(m, "instructgpt", str(v), 175.0) for v, m in enumerate(INSTRUCT)])
    add_models(catalog, [("policy-v3-7b", "instructgpt", "3", 7.0)])
    add_models(catalog, [(m, "davinci-ft", "1", 175.0) for m in FINE_TUNES])
    # through the ingest CLI, as a user would
    c = ["-c", str(catalog.root)]
    for args in (
        ["prompts", str(d / "prompts.jsonl"), "--set", "source=self_instruct"],
        ["answers", str(d / "prompts.jsonl"), "--map", "turns=human_output", "--prompt-source", "self_instruct"],
        ["responses", str(d / "responses.jsonl"), "--prompt-source", "self_instruct"],
    ):
        result = CliRunner().invoke(cli, ["ingest", *args, *c])
        assert result.exit_code == 0, result.output
    (catalog.root / "round.toml").write_text('base_model = "policy-v3-7b"\n[mix]\nmatrix = 1\nbase = 0\n')
    return catalog


@pytest.fixture(scope="module")
def cross_size(shared_data: Path, tmp_path_factory) -> Catalog:
    """mt_bench (two-turn prompts): vicuna 7b/13b/33b v1.3. Round 2: the base is the round-1
    policy vicuna-13b v1.4, so vicuna-33b is the positive and vicuna-7b (smaller) and
    vicuna-13b-v1.3 (older) the negatives. Plus vicuna_eval_gpt4_review for the τ split:
    the two vicuna-13b checkpoints of 2023-03-22 stand for two samples of the base, scored
    by GPT-4 (the mean over the reviews of an answer; a 0 = "no answer" is stored as failed)."""
    catalog = Catalog.init(tmp_path_factory.mktemp("mt") / "cat")
    add_models(catalog, [("vicuna-7b-v1.3", "vicuna", "13", 7.0), ("vicuna-13b-v1.3", "vicuna", "13", 13.0),
                         ("vicuna-33b-v1.3", "vicuna", "13", 33.0), ("vicuna-13b-v1.4", "vicuna", "14", 13.0)])
    mt = shared_data / "mt_bench"
    questions = read_jsonl(mt / "questions.jsonl")
    msgs = {q["question_id"]: [*_user(q["turn_1"]), *_user(q["turn_2"])] for q in questions}
    pid = dict(zip(msgs, add_prompts(catalog, [(m, "train") for m in msgs.values()], source="mt_bench")))
    add_responses(catalog, [
        (pid[r["question_id"]], r["model"], 0, [r["turn_1"], r["turn_2"]])
        for r in read_jsonl(mt / "responses.jsonl") if r["model"].startswith("vicuna-")
    ])
    ve = shared_data / "vicuna_eval_gpt4_review"
    vq = {q["question_id"]: q["question"] for q in read_jsonl(ve / "questions.jsonl")}
    vpid = dict(zip(vq, add_prompts(catalog, [(_user(t), "train") for t in vq.values()], source="vicuna_eval")))
    samples = {"vicuna-13b:20230322-clean-lang": 0, "vicuna-13b:20230322-new-hp-fp16": 1}
    resp = [r for r in read_jsonl(ve / "responses.jsonl") if r["model"] in samples]
    rids = add_responses(catalog,
                         [(vpid[r["question_id"]], "vicuna-13b-v1.4", samples[r["model"]], [r["text"]]) for r in resp])
    rid = {(r["question_id"], r["model"]): i for r, i in zip(resp, rids)}
    rows = []
    for n, j in enumerate(read_jsonl(ve / "judgments.jsonl")):
        for side in ("1", "2"):
            key = (j["question_id"], j[f"model_{side}"])
            if key in rid:
                score = j[f"score_{side}"]
                rows.append((rid[key], vpid[j["question_id"]], "vicuna-13b-v1.4", "gpt-4", score if score > 0 else None,
                             f"{n}-{side}"))
    add_judgments(catalog, rows)
    (catalog.root / "round.toml").write_text(
        'base_model = "vicuna-13b-v1.4"\njudge = "gpt-4"\nmax_pairs_per_prompt = 1\n'
        '[positive]\nsources = ["newest-largest"]\n'
    )
    return catalog


def _snapshot(build) -> pl.DataFrame:
    return pl.read_parquet(build.path)


def test_cross_version_pools_and_pairs_match_independent_queries(cross_version: Catalog) -> None:
    build = plan_round(cross_version, load_round_config(cross_version.round_config_path, 1))
    assert set(build.pools.positive) == {"human", "text-davinci-003"}
    assert set(build.pools.negative) == {"davinci", "text-davinci-001", "text-davinci-002"}
    write_round(cross_version, build)
    snap = _snapshot(build)
    con = duckdb.connect(str(cross_version.db_path), read_only=True)
    n_prompts = con.execute("SELECT count(*) FROM prompts").fetchall()[0][0]
    # a prompt is usable unless every negative text equals every positive text
    usable = con.execute(
        """SELECT count(DISTINCT p.prompt_id) FROM prompts p
           WHERE EXISTS (SELECT 1 FROM answers a WHERE a.prompt_id = p.prompt_id)
             AND EXISTS (SELECT 1 FROM responses r WHERE r.prompt_id = p.prompt_id
                         AND r.model IN ('davinci','text-davinci-001','text-davinci-002'))"""
    ).fetchall()[0][0]
    assert n_prompts == usable == 252
    assert snap.height >= 245 and snap["prompt_id"].n_unique() == snap.height
    assert set(snap["kind"]) == {"matrix"} and set(snap["round"]) == {1}
    # every chosen/rejected text is the stored text of the named source for that prompt
    con.register("snap", snap.select("prompt_id", "chosen_source", "rejected_source",
                                     pl.col("chosen").list.first().struct.field("content").alias("c"),
                                     pl.col("rejected").list.first().struct.field("content").alias("r")).to_arrow())
    texts = """(SELECT prompt_id, source, turns[1] AS t FROM answers
               UNION ALL SELECT prompt_id, model, turns[1] FROM responses)"""
    mismatched = con.execute(
        f"""SELECT count(*) FROM snap s WHERE NOT EXISTS (SELECT 1 FROM {texts} x WHERE x.prompt_id = s.prompt_id
             AND x.source = s.chosen_source AND x.t = s.c)
           OR NOT EXISTS (SELECT 1 FROM {texts} x WHERE x.prompt_id = s.prompt_id
             AND x.source = s.rejected_source AND x.t = s.r)
           OR s.c = s.r"""
    ).fetchall()[0][0]
    assert mismatched == 0
    human = int((snap["chosen_source"] == "human").sum())
    assert abs(human - snap.height / 2) <= 3 * (snap.height / 4) ** 0.5  # 50 % human, 50 % newest-largest
    con.close()


def test_cross_size_multi_turn_and_tau_split(cross_size: Catalog, shared_data: Path) -> None:
    build = plan_round(cross_size, load_round_config(cross_size.round_config_path, 2))
    assert build.pools.positive == {"vicuna-33b-v1.3": 1.0}
    assert set(build.pools.negative) == {"vicuna-7b-v1.3", "vicuna-13b-v1.3"}  # 33b is older but positive
    # τ and the expected base pairs, computed independently from the raw review file
    ve = shared_data / "vicuna_eval_gpt4_review"
    samples = ["vicuna-13b:20230322-clean-lang", "vicuna-13b:20230322-new-hp-fp16"]
    scores: dict[tuple[int, str], list[float]] = {}
    for j in read_jsonl(ve / "judgments.jsonl"):
        for side in ("1", "2"):
            if j[f"model_{side}"] in samples and j[f"score_{side}"] > 0:
                scores.setdefault((j["question_id"], j[f"model_{side}"]), []).append(j[f"score_{side}"])
    mean = {k: sum(v) / len(v) for k, v in scores.items()}
    tau = sum(mean.values()) / len(mean)
    assert build.result.tau == pytest.approx(tau)
    expected = 0
    for q in {k[0] for k in mean}:
        s = [mean.get((q, m)) for m in samples]
        if None not in s and max(s) > tau >= min(s):
            expected += 1
    assert build.result.available["base"] == expected >= 3
    write_round(cross_size, build)
    snap = _snapshot(build)
    base = snap.filter(pl.col("kind") == "base")
    matrix = snap.filter(pl.col("kind") == "matrix")
    assert base.height == matrix.height == expected  # N unset: as many as the 50/50 mix allows
    assert (base["chosen_score"] > tau).all() and (base["rejected_score"] <= tau).all()
    # two-turn MT-Bench prompts: prompt = first user turn, chosen = [assistant, user, assistant]
    row = matrix.row(0, named=True)
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["chosen"]] == ["assistant", "user", "assistant"]
    assert row["chosen_source"] == "vicuna-33b-v1.3" and row["rejected_source"] in build.pools.negative
    summary = {r["source"]: r for r in __import__("tso_data.pairs.run", fromlist=["x"]).source_distances(build)}
    assert summary["vicuna-7b-v1.3"]["answers"] == 80


def test_cli_build_dry_run_rebuild_strict_and_snapshots(cross_version: Catalog) -> None:
    runner = CliRunner()
    c = str(cross_version.root)
    dry = runner.invoke(cli, ["build", "--round", "3", "-c", c, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.output)
    assert plan["snapshot_id"] is None and plan["membership"]["positive:newest-largest"] == ["text-davinci-003"]
    first = runner.invoke(cli, ["build", "--round", "3", "-c", c, "--pairs", "100", "--json"])
    assert first.exit_code == 0, first.output
    a = json.loads(first.output)
    again = runner.invoke(cli, ["build", "--round", "3", "-c", c, "--pairs", "100", "--json"])
    b = json.loads(again.output)
    assert (a["created"], b["created"], a["snapshot_id"]) == (True, False, b["snapshot_id"])
    meta = pq.read_schema(a["path"]).metadata
    assert meta[b"tso.snapshot_id"].decode() == a["snapshot_id"] and meta[b"tso.schema_version"] == b"1"
    too_many = runner.invoke(cli, ["build", "--round", "3", "-c", c, "--pairs", "5000", "--seed", "1"])
    assert too_many.exit_code == 0 and "fewer matrix pairs than asked" in too_many.output
    strict = runner.invoke(cli, ["build", "--round", "3", "-c", c, "--pairs", "6000", "--strict"])
    assert strict.exit_code == 2 and "--strict" in strict.output
    listed = json.loads(runner.invoke(cli, ["snapshots", "list", "-c", c, "--json"]).output)
    ids_ = [r["snapshot_id"] for r in listed if r["round"] == 3]
    assert len(ids_) == 2
    diff = runner.invoke(cli, ["snapshots", "diff", ids_[0], ids_[1], "-c", c, "--json"])
    d = json.loads(diff.output)
    assert {x["key"] for x in d["config"]} == {"pairs", "seed"}
    n_pairs = {r["snapshot_id"]: r["n_pairs"] for r in listed}
    assert d["overlap"]["shared"] + d["overlap"]["only_a"] == n_pairs[ids_[0]]
    assert d["overlap"]["shared"] + d["overlap"]["only_b"] == n_pairs[ids_[1]]
    assert d["overlap"]["shared"] > 0
    show = runner.invoke(cli, ["snapshots", "show", ids_[0][:6], "-c", c])
    assert show.exit_code == 0 and ids_[0] in show.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--base-model", "ghost"], "base_model 'ghost' is not in the models table"),
        (["--negative", "older-and-smaller"], "negative pool is empty"),
        (["--negative-weight", "davinci=-1"], "--negative-weight 'davinci=-1': a weight is a finite number >= 0"),
        (["--matrix-ratio", "0.5"], "no scored base answers"),
    ],
)
def test_cli_bad_input_exits_2(cross_version: Catalog, args, message: str) -> None:
    result = CliRunner().invoke(cli, ["build", "--round", "1", "-c", str(cross_version.root), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_unknown_config_key(cross_version: Catalog, tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text('base_model = "policy-v3-7b"\n[negative]\nweight = {}\n')
    result = CliRunner().invoke(cli, ["build", "--round", "1", "-c", str(cross_version.root), "--config", str(cfg)])
    assert result.exit_code == 2 and "unknown key 'negative.weight'" in result.output


def test_snapshot_loads_in_datasets_chat_template_and_trl(cross_size: Catalog, tiny_model_dir: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer

    build = plan_round(cross_size, load_round_config(cross_size.round_config_path, 2))
    write_round(cross_size, build)
    ds = load_dataset("parquet", data_files=str(build.path), split="train")
    assert set(ds.column_names) >= {"prompt", "chosen", "rejected", "pair_id", "kind", "round"}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    row = ds.filter(lambda r: r["kind"] == "matrix")[0]
    text = tok.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)
    assert "<|user|>" in text and row["chosen"][-1]["content"][:40] in text

    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    small = ds.select(range(4)).select_columns(["prompt", "chosen", "rejected"])
    args = DPOConfig(output_dir=str(cross_size.root / "trl"), per_device_train_batch_size=2, max_steps=1,
                     bf16=False, use_cpu=True, report_to="none", max_length=4096, logging_steps=1, save_strategy="no")
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=small, processing_class=tok)
    assert len(trainer.train_dataset) == 4  # every pair tokenised, none dropped
    trainer.train()  # one DPO step on the snapshot's rows
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(x == x for x in losses)
