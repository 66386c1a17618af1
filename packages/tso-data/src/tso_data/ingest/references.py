"""What a row refers to, resolved against the catalog: its prompt (by prompt_id or external
id), its model, its answer turns, and for judgments and feedback the response or answer it
judges. Each step adds columns to ``stage`` or stops at the first row it cannot resolve.
"""

from __future__ import annotations

from tso_data.ingest.staging import StagedFile


def resolve_prompts(job: StagedFile) -> None:
    """Add ``prompt_id`` and ``n_turns`` to ``stage`` from the ``prompt`` reference:
    a catalog prompt_id, else a unique prompts.external_id."""
    job.require("prompt", "--set prompt=ID")
    con = job.con
    src_filter = ""
    params: list[object] = []
    if job.options.prompt_source is not None:
        src_filter = " AND p.source = ?"
        params = [job.options.prompt_source]
    con.execute("CREATE OR REPLACE TEMP TABLE refs AS SELECT DISTINCT prompt AS ref FROM stage")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE ref_hits AS "
        "SELECT r.ref, p.prompt_id, p.source, p.n_turns FROM refs r JOIN prompts p ON p.prompt_id = r.ref "
        "UNION ALL "
        "SELECT r.ref, p.prompt_id, p.source, p.n_turns FROM refs r JOIN prompts p ON p.external_id = r.ref"
        f"{src_filter} WHERE r.ref NOT IN (SELECT prompt_id FROM prompts)",
        params,
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE refmap AS SELECT ref, any_value(prompt_id) AS prompt_id, "
        "any_value(n_turns) AS n_turns, count(DISTINCT prompt_id) AS n, "
        "string_agg(DISTINCT coalesce(source, '(no source)'), ', ') AS sources FROM ref_hits GROUP BY ref"
    )
    where = f" of source '{job.options.prompt_source}'" if job.options.prompt_source else ""
    job.fail_if(
        "prompt NOT IN (SELECT ref FROM refmap)", "prompt",
        f"no prompt{where} with prompt_id or external id {{value!r}} in the catalog; ingest the prompts first",
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_amb AS SELECT s.__row, s.prompt, "
        "m.n || ' prompts (sources: ' || m.sources || ')' AS __extra "
        "FROM stage s JOIN refmap m ON s.prompt = m.ref WHERE m.n > 1"
    )
    job.fail_if(
        "true", "prompt",
        "external id {value!r} is ambiguous: it matches {extra}; pass --prompt-source SOURCE",
        table="stage_amb",
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.*, m.prompt_id, m.n_turns "
        "FROM stage s JOIN refmap m ON s.prompt = m.ref"
    )


def check_turns(job: StagedFile, allow_empty: bool) -> None:
    if job.light:
        if "turns" not in job.b:
            job.require("turns")
        n, n_empty = "turns_len", "turns_empty"
    else:
        job.require("turns")
        n, n_empty = "len(turns)", "len(list_filter(turns, lambda t: trim(t) = ''))"
    job.fail_if(f"{n} = 0", "turns", "no turns")
    job.con.execute(
        f"CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT __row, "
        f"{n} || ' turn(s) given, the prompt has ' || n_turns || ' user turn(s) to answer' AS __extra "
        f"FROM stage WHERE {n} <> n_turns"
    )
    job.fail_if("true", "turns", "{extra}", table="stage_bad")
    if not allow_empty:
        job.fail_if(f"{n_empty} > 0", "turns", "empty text")
    else:
        empty = job.con.execute(f"SELECT count(*) FROM stage WHERE {n_empty} > 0").fetchone()
        if empty and empty[0]:
            job.report.notes.append(f"{empty[0]} row(s) with an empty turn (kept: a model may answer nothing)")


def check_models(job: StagedFile, human_ok: bool) -> None:
    """``model`` must name a row of ``models``; adds ``model_kind`` to stage."""
    job.require("model", "--model NAME" if job.report.kind == "responses" else "--set model=NAME")
    known = [r[0] for r in job.con.execute("SELECT name FROM models ORDER BY name").fetchall()]
    shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
    # Exact name first; else a unique case-insensitive match (MT-Bench's responses say
    # 'RWKV-4-Raven-14B' for the model its models.jsonl calls 'rwkv-4-raven-14b').
    job.con.execute(
        "CREATE OR REPLACE TEMP TABLE model_map AS SELECT d.model, coalesce(e.name, ci.name) AS name, "
        "coalesce(e.kind, ci.kind) AS kind FROM (SELECT DISTINCT model FROM stage) d "
        "LEFT JOIN models e ON e.name = d.model "
        "LEFT JOIN (SELECT lower(name) AS lname, any_value(name) AS name, any_value(kind) AS kind "
        "  FROM models GROUP BY 1 HAVING count(*) = 1) ci ON ci.lname = lower(d.model)"
    )
    job.fail_if(
        "model IN (SELECT model FROM model_map WHERE name IS NULL)", "model",
        f"unknown model {{value!r}} (known: {shown}); register it with "
        "`tso-data models add NAME --family F --version V --size-b S` or `tso-data models import FILE`",
    )
    for given, name in job.con.execute(
        "SELECT model, name FROM model_map WHERE name <> model ORDER BY model"
    ).fetchall():
        job.report.notes.append(f"model {given!r} stored as the registered {name!r} (case differs)")
    job.con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.* EXCLUDE (model), m.name AS model, m.kind AS model_kind "
        "FROM stage s JOIN model_map m ON m.model = s.model"
    )
    if not human_ok:
        job.fail_if("model_kind = 'human'", "model", "{value!r} is a human source: ingest its texts as answers")


def resolve_targets(job: StagedFile) -> None:
    """Add ``target_id``, ``target_kind``, ``prompt_id`` and ``source`` to stage (judgments,
    feedback): from an explicit target_id, or from prompt + model (+ sample_index)."""
    con = job.con
    if "target_id" in job.b:
        job.require("target_id")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.* EXCLUDE (target_id), s.target_id AS target_ref, "
            "t.id AS target_id, t.target_kind, t.prompt_id AS prompt_id, t.source AS judged_source "
            "FROM stage s LEFT JOIN ("
            "SELECT response_id AS id, 'response' AS target_kind, prompt_id, model AS source FROM responses "
            "UNION ALL SELECT answer_id, 'answer', prompt_id, source FROM answers) t ON t.id = s.target_id"
        )
        job.b["target_ref"] = job.b["target_id"]
        job.fail_if(
            "target_id IS NULL", "target_ref",
            "no response or answer with id {value!r} in the catalog",
        )
        return
    resolve_prompts(job)
    check_models(job, human_ok=True)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage AS SELECT s.* EXCLUDE (target_id), "
        "coalesce(r.response_id, a.answer_id) AS target_id, "
        "CASE WHEN s.model_kind = 'human' THEN 'answer' ELSE 'response' END AS target_kind, "
        "s.model AS judged_source, a.n_answers "
        "FROM stage s "
        "LEFT JOIN responses r ON s.model_kind = 'model' AND r.prompt_id = s.prompt_id "
        "  AND r.model = s.model AND r.sample_index = coalesce(s.sample_index, 0) "
        "LEFT JOIN (SELECT prompt_id, source, any_value(answer_id) AS answer_id, count(*) AS n_answers "
        "  FROM answers GROUP BY ALL) a ON s.model_kind = 'human' AND a.prompt_id = s.prompt_id AND a.source = s.model"
    )
    job.fail_if(
        "model_kind = 'human' AND n_answers > 1", "model",
        "prompt has several answers from {value!r}: give the answer_id (--map target_id=COLUMN)",
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE stage_bad AS SELECT __row, __part, model, "
        "'prompt ' || prompt || CASE WHEN model_kind = 'human' THEN '' "
        "ELSE ', sample_index ' || coalesce(sample_index, 0) END AS __extra FROM stage WHERE target_id IS NULL"
    )
    job.fail_if(
        "true", "model",
        "nothing from {value!r} to judge for {extra}; ingest its responses/answers first",
        table="stage_bad",
    )
