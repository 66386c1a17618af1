"""Per kind of file, the checks and the rows to write: prompts, human answers, model
responses, judgments, feedback. Each step gets a staged file (:mod:`tso_data.ingest.staging`)
and leaves its new rows in ``final_rows``; nothing is written here.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from tso_data import ids
from tso_data.catalog import HUMAN_SOURCE
from tso_data.errors import located
from tso_data.ingest.fields import SPLITS
from tso_data.ingest.identity import dedupe, patch_python_ids, stage_new_rows
from tso_data.ingest.prompt_identity import check_external_ids, check_splits
from tso_data.ingest.references import check_models, check_turns, resolve_prompts, resolve_targets
from tso_data.ingest.sql import columns_of, literal
from tso_data.ingest.staging import StagedFile


def prepare_prompts(job: StagedFile) -> None:
    con = job.con
    chosen = next((n for n in ("messages", "turns", "prompt") if n in job.b), None)
    if chosen is None:
        raise located(
            job.path, job.first_row(), "prompt",
            "missing: no 'messages', 'turns' or 'prompt' column; map one, e.g. --map prompt=COLUMN "
            "or --map turns=turn_1,turn_2",
        )
    job.require(chosen)
    if chosen == "messages":
        msgs = "messages"
    elif chosen == "turns":
        msgs = "list_transform(turns, lambda t: {'role': 'user', 'content': t})"
    else:
        msgs = (
            "[{'role': 'user', 'content': CASE WHEN input IS NULL OR trim(input) = '' THEN prompt "
            "ELSE prompt || chr(10) || chr(10) || input END}]"
        )
    msgs = (f"CASE WHEN system IS NULL OR trim(system) = '' THEN {msgs} "
            f"ELSE list_prepend({{'role': 'system', 'content': system}}, {msgs}) END")
    con.execute(f"CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (messages), {msgs} AS messages FROM stage")
    job.b.setdefault("messages", job.b[chosen])
    job.fail_if("len(messages) = 0", "messages", "empty prompt (no messages)")
    job.fail_if(
        "len(list_filter(messages, lambda m: m.content IS NULL OR trim(m.content) = '')) > 0",
        chosen, "empty prompt (a message has no text)",
    )
    job.fail_if(
        "len(list_filter(messages, lambda m: m.role IS NULL OR m.role NOT IN ('system', 'user', 'assistant'))) > 0",
        chosen, "a message role is not 'system', 'user' or 'assistant'",
    )
    job.fail_if("messages[-1].role <> 'user'", chosen, "the last message must be from the user")
    job.check_choice("split", SPLITS)
    roles_rev = "list_reverse(list_transform(messages, lambda m: m.role))"
    n_turns = (
        f"len(list_filter(CASE WHEN list_position({roles_rev}, 'assistant') IS NULL THEN {roles_rev} "
        f"ELSE list_slice({roles_rev}, 1, list_position({roles_rev}, 'assistant') - 1) END, lambda r: r = 'user'))"
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT *, "
        f"{ids.sql_hash('prompt', 'to_json(messages)')} AS prompt_id, {n_turns} AS n_turns FROM stage"
    )
    patch_python_ids(con, "prompt_id", "messages", lambda m: ids.prompt_id(m))
    # The same prompt twice in one file: the first row's labels win (not a conflict), but
    # its split and its (source, external id) must hold together (ingest.prompt_identity).
    con.execute("CREATE OR REPLACE TEMP TABLE firsts AS SELECT * FROM stage "
                "QUALIFY row_number() OVER (PARTITION BY prompt_id ORDER BY __row, __part) = 1")
    check_splits(job)
    check_external_ids(job)
    unique = job.count("firsts")
    job.report.duplicates = job.report.rows - unique
    stage_new_rows(
        job, "prompts",
        "SELECT prompt_id, messages, n_turns, source, category, language, external_id, "
        "coalesce(split, 'train') AS split, now() AS added_at FROM firsts",
        unique,
    )


def prepare_answers(job: StagedFile) -> None:
    con = job.con
    resolve_prompts(job)
    check_turns(job, allow_empty=False)
    con.execute("CREATE OR REPLACE TEMP TABLE stage AS "
                f"SELECT * EXCLUDE (source), coalesce(source, '{HUMAN_SOURCE}') AS source FROM stage")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT s.__row, s.source FROM stage s "
        "LEFT JOIN models m ON m.name = s.source WHERE m.kind IS DISTINCT FROM 'human'"
    )
    job.fail_if("true", "source", "{value!r} is not a human source of this catalog "
                "(answers are human-written; model outputs go to `ingest responses`)", table="stage_bad")
    turns_json = "'[' || array_to_string(list_transform(turns, lambda t: to_json(t)), ', ') || ']'"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT *, "
        f"{ids.sql_hash('answer', 'prompt_id', 'source', turns_json)} AS answer_id FROM stage"
    )
    patch_python_ids(con, "answer_id", "turns", None, answer_args=True)
    unique_sql = dedupe(job, "answer_id", ["turns"], "answers")
    con.execute(f"CREATE OR REPLACE TEMP TABLE firsts AS {unique_sql}")
    stage_new_rows(
        job, "answers",
        "SELECT answer_id, prompt_id, source, turns, author, now() AS added_at FROM firsts",
        job.count("firsts"),
    )


def prepare_responses(job: StagedFile) -> None:
    con = job.con
    resolve_prompts(job)
    check_models(job, human_ok=False)
    check_turns(job, allow_empty=True)
    job.fail_if("sample_index < 0 OR sample_index > 2147483647", "sample_index",
                "{value} is not an index from 0 to 2^31 - 1")
    sid = ids.sql_hash("response", "prompt_id", "model", "'ingested'", "CAST(coalesce(sample_index, 0) AS VARCHAR)")
    con.execute(f"CREATE OR REPLACE TEMP TABLE stage AS SELECT *, {sid} AS response_id FROM stage")
    hint = "; several samples per prompt and model need a sample_index column (--map sample_index=COLUMN)"
    unique_sql = dedupe(job, "response_id", ["turns"], "responses", hint, stage_fp="turns_fp")
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE new_rows AS SELECT * FROM ({unique_sql}) f "
        "WHERE NOT EXISTS (SELECT 1 FROM responses t WHERE t.response_id = f.response_id)"
    )
    # the texts are read from the file again only for the new rows
    job.stage_final(
        "responses",
        "SELECT f.response_id, f.prompt_id, f.model, coalesce(f.sample_index, 0)::INTEGER AS sample_index, "
        "x.__turns AS turns, 'ingested' AS sampling, 'ingested' AS backend, NULL::INTEGER AS prompt_tokens, "
        "NULL::INTEGER AS completion_tokens, f.finish_reason, NULL::DOUBLE AS latency_s, now() AS created_at "
        f"FROM new_rows f JOIN (SELECT __row AS __src_row, {job.light_exprs['turns']} AS __turns FROM src) x "
        "ON x.__src_row = f.__row",
        job.report.rows - job.report.duplicates,
    )


def prepare_judgments(job: StagedFile) -> None:
    con = job.con
    resolve_targets(job)
    job.require("judge", "--set judge=NAME")
    lo, hi = job.options.scale if job.options.scale else (None, None)
    key = "coalesce(key, pair_key, '')" if "pair_key" in columns_of(con, "stage") else "coalesce(key, '')"
    status = (
        "CASE WHEN score IS NULL THEN CASE WHEN raw_text IS NULL THEN 'error' ELSE 'unparsed' END "
        + (f"WHEN score < {lo} OR score > {hi} THEN 'error' " if lo is not None else "")
        + "ELSE 'ok' END"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (key, rubric, rubric_version), {key} AS key, "
        "coalesce(rubric, 'overall') AS rubric, coalesce(rubric_version, '1') AS rubric_version, "
        f"{status} AS status FROM stage"
    )
    jid = ids.sql_hash("judgment", "target_id", "judge", "rubric", "rubric_version", "key")
    out_of_scale = con.execute("SELECT count(*) FROM stage WHERE status = 'error' AND score IS NOT NULL").fetchone()
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (score), "
        f"CASE WHEN status = 'ok' THEN score END AS score, {jid} AS judgment_id FROM stage"
    )
    unique_sql = dedupe(
        job, "judgment_id", ["status", "score", "raw_text"], "judgments",
        "; several judgments of one answer by one judge need a key column (--map key=COLUMN)",
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE firsts AS {unique_sql}")
    rows = con.execute(
        "SELECT count(*) FILTER (status <> 'ok'), count(*) FILTER (status = 'unparsed') FROM firsts"
    ).fetchone()
    job.report.not_ok = int(rows[0]) if rows else 0
    if out_of_scale and out_of_scale[0]:
        job.report.notes.append(
            f"{out_of_scale[0]} score(s) outside the scale {lo:g}-{hi:g} (e.g. 0 = 'no answer') stored as not ok: "
            "status 'error', score NULL, review text kept"
        )
    if rows and rows[1]:
        job.report.notes.append(f"{rows[1]} judgment(s) without a score stored as status 'unparsed' (raw text kept)")
    stage_new_rows(
        job, "judgments",
        "SELECT judgment_id, target_id, target_kind, prompt_id, judged_source AS source, judge, judge_version, "
        "rubric, rubric_version, 0 AS sample_index, raw_text, score, "
        f"status, 1 AS attempts, {literal(lo)}::DOUBLE AS scale_min, {literal(hi)}::DOUBLE AS scale_max, "
        "now() AS created_at FROM firsts",
        job.count("firsts"),
    )


def prepare_feedback(job: StagedFile) -> None:
    con = job.con
    resolve_targets(job)
    job.require("score")
    job.require("annotator", "--set annotator=human")
    job.check_choice("split", SPLITS)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT * EXCLUDE (rubric, split), "
        "coalesce(rubric, 'overall') AS rubric, coalesce(split, 'train') AS split FROM stage"
    )
    check_feedback_scale(job)
    keys = con.sql(
        "SELECT __row, __part, target_id, rubric, annotator, score, rationale FROM stage"
    ).to_arrow_table().to_pylist()
    fids = pa.table(
        {
            "__row": [k["__row"] for k in keys],
            "__part": [k["__part"] for k in keys],
            "feedback_id": [
                ids.feedback_id(k["target_id"], k["rubric"], k["annotator"], k["score"],
                                k["rationale"] or "") for k in keys
            ],
        }
    )
    con.register("fids", fids)
    con.execute("CREATE OR REPLACE TEMP TABLE stage AS "
                "SELECT s.*, f.feedback_id FROM stage s JOIN fids f USING (__row, __part)")
    unique_sql = dedupe(job, "feedback_id", ["split"], "feedback")
    con.execute(f"CREATE OR REPLACE TEMP TABLE firsts AS {unique_sql}")
    stage_new_rows(
        job, "feedback",
        "SELECT feedback_id, target_id, target_kind, prompt_id, rubric, score, rationale, annotator, split, "
        "now() AS added_at FROM firsts",
        job.count("firsts"),
    )


def check_feedback_scale(job: StagedFile) -> None:
    """A corrected score lies on its rubric's scale: the rubric file's when there is one
    (shipped or <catalog>/rubrics), else ``--scale``."""
    scales = job.options.rubric_scales
    job.con.register("rubric_scales", pa.table({
        "rubric": pa.array(list(scales), pa.string()),
        "lo": pa.array([lo for lo, _ in scales.values()], pa.float64()),
        "hi": pa.array([hi for _, hi in scales.values()], pa.float64()),
    }))
    default = job.options.scale
    lo, hi = (literal(default[0]), literal(default[1])) if default else ("NULL", "NULL")
    low, high = f"coalesce(r.lo, {lo})", f"coalesce(r.hi, {hi})"
    job.con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT s.__row, s.__part, s.score, "
        f"format('{{:g}}-{{:g}} of rubric ''{{}}''', {low}, {high}, s.rubric) AS __extra "
        f"FROM stage s LEFT JOIN rubric_scales r USING (rubric) WHERE s.score < {low} OR s.score > {high}"
    )
    job.con.unregister("rubric_scales")
    job.fail_if("true", "score", "{value:g} is outside the scale {extra}", table="stage_bad")


PREPARE_BY_KIND: dict[str, Callable[[StagedFile], None]] = {
    "prompts": prepare_prompts,
    "answers": prepare_answers,
    "responses": prepare_responses,
    "judgments": prepare_judgments,
    "feedback": prepare_feedback,
}
