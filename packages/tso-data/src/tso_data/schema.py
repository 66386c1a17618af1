"""The catalog's tables. Names and columns are a stable, documented interface:
users query them with plain SQL (docs/catalog.md, "Tables").

No PRIMARY KEY constraints: DuckDB's ART indexes on tens of millions of string keys cost
gigabytes of memory. Uniqueness of every ``*_id`` is kept by the one write path,
:func:`tso_data.catalog.insert_new` / :func:`tso_data.catalog.replace_rows`, and tested.
"""

from __future__ import annotations

CATALOG_SCHEMA_VERSION = "1"

# (table name, key column, DDL body)
TABLES: dict[str, tuple[str, str]] = {
    "meta": (
        "key",
        """
        key VARCHAR NOT NULL,
        value VARCHAR
        """,
    ),
    "models": (
        "name",
        """
        name VARCHAR NOT NULL,          -- unique source name, e.g. 'acme-v2-7b'; 'human' is built in
        kind VARCHAR NOT NULL,          -- 'model' | 'human'
        family VARCHAR,                 -- e.g. 'acme'
        version VARCHAR,                -- as given: '2' or '2024-06-01'
        version_order BIGINT,           -- orderable key: the integer, or a date as YYYYMMDD
        size_b DOUBLE,                  -- parameters, billions
        path VARCHAR,                   -- local weights (transformers / vllm backends)
        endpoint VARCHAR,               -- OpenAI-compatible base URL (openai backend)
        backend VARCHAR,                -- default generation backend, null = infer
        note VARCHAR,
        added_at TIMESTAMP NOT NULL
        """,
    ),
    "prompts": (
        "prompt_id",
        """
        prompt_id VARCHAR NOT NULL,     -- content hash of the canonical messages
        messages STRUCT(role VARCHAR, content VARCHAR)[] NOT NULL,
        n_turns INTEGER NOT NULL,       -- user turns to answer (MT-Bench: 2)
        source VARCHAR,                 -- dataset / origin label
        category VARCHAR,
        language VARCHAR,
        external_id VARCHAR,            -- the id the prompt had in its source file
        split VARCHAR NOT NULL,         -- 'train' (pairs are built from it) | 'heldout' (evaluation)
        added_at TIMESTAMP NOT NULL
        """,
    ),
    "answers": (
        "answer_id",
        """
        answer_id VARCHAR NOT NULL,     -- hash(prompt_id, source, turns)
        prompt_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,        -- a models.name of kind 'human' (default 'human')
        turns VARCHAR[] NOT NULL,       -- one assistant text per user turn
        author VARCHAR,
        added_at TIMESTAMP NOT NULL
        """,
    ),
    "responses": (
        "response_id",
        """
        response_id VARCHAR NOT NULL,   -- hash(prompt_id, model, sampling, sample_index)
        prompt_id VARCHAR NOT NULL,
        model VARCHAR NOT NULL,         -- models.name
        sample_index INTEGER NOT NULL,
        turns VARCHAR[] NOT NULL,       -- one assistant text per user turn
        sampling VARCHAR NOT NULL,      -- canonical JSON of sampling parameters, 'ingested' for loaded files
        backend VARCHAR NOT NULL,       -- 'transformers' | 'openai' | 'vllm' | 'ingested'
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        finish_reason VARCHAR,
        latency_s DOUBLE,
        created_at TIMESTAMP NOT NULL
        """,
    ),
    "judgments": (
        "judgment_id",
        """
        judgment_id VARCHAR NOT NULL,   -- hash(target_id, judge, rubric, rubric_version, key)
        target_id VARCHAR NOT NULL,     -- responses.response_id or answers.answer_id
        target_kind VARCHAR NOT NULL,   -- 'response' | 'answer'
        prompt_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,        -- the judged model (models.name) or 'human'
        judge VARCHAR NOT NULL,         -- judge model name, 'fn:module:function', or a label for ingested scores
        judge_version VARCHAR,
        rubric VARCHAR NOT NULL,        -- e.g. 'overall', 'factuality'
        rubric_version VARCHAR NOT NULL,
        sample_index INTEGER NOT NULL,
        raw_text VARCHAR,               -- the judge's full output (kept for --reparse)
        score DOUBLE,                   -- NULL unless status = 'ok'; never a sentinel
        status VARCHAR NOT NULL,        -- 'ok' | 'unparsed' | 'error'
        attempts INTEGER NOT NULL,
        scale_min DOUBLE,
        scale_max DOUBLE,
        created_at TIMESTAMP NOT NULL,
        CHECK ((status = 'ok') = (score IS NOT NULL))
        """,
    ),
    "verdicts": (
        "verdict_id",
        """
        verdict_id VARCHAR NOT NULL,    -- hash(target_1, target_2, judge, rubric, rubric_version, shown_first,
                                        --      sample_index)
        prompt_id VARCHAR NOT NULL,
        source_1 VARCHAR NOT NULL,      -- answer 1's source: the baseline (AlpacaEval's generator_1)
        target_1 VARCHAR NOT NULL,      -- its responses.response_id or answers.answer_id
        source_2 VARCHAR NOT NULL,      -- answer 2's source: the compared model (generator_2)
        target_2 VARCHAR NOT NULL,
        judge VARCHAR NOT NULL,         -- judge model name, or a label for ingested verdicts
        judge_version VARCHAR,
        rubric VARCHAR NOT NULL,        -- the pairwise prompt's name, e.g. 'pairwise'
        rubric_version VARCHAR NOT NULL,
        shown_first SMALLINT,           -- 1 or 2: the answer the judge saw as "A"; NULL = unknown (ingested)
        sample_index INTEGER NOT NULL,
        raw_text VARCHAR,               -- the judge's full output (kept for re-parsing)
        preference DOUBLE,              -- [1, 2]: 1 = answer 1 better, 2 = answer 2 better, 1.5 = tie; NULL unless ok
        status VARCHAR NOT NULL,        -- 'ok' | 'unparsed' | 'error'
        attempts INTEGER NOT NULL,
        created_at TIMESTAMP NOT NULL,
        CHECK ((status = 'ok') = (preference IS NOT NULL)),
        CHECK (preference IS NULL OR preference BETWEEN 1 AND 2)
        """,
    ),
    "feedback": (
        "feedback_id",
        """
        feedback_id VARCHAR NOT NULL,
        target_id VARCHAR NOT NULL,     -- responses.response_id or answers.answer_id
        target_kind VARCHAR NOT NULL,
        prompt_id VARCHAR NOT NULL,
        rubric VARCHAR NOT NULL,
        score DOUBLE NOT NULL,          -- the corrected score
        rationale VARCHAR,
        annotator VARCHAR NOT NULL,     -- 'human', 'human:<name>' or 'ai:<model>'
        split VARCHAR NOT NULL,         -- 'train' (judge SFT) | 'heldout' (judge agreement)
        added_at TIMESTAMP NOT NULL
        """,
    ),
    "failures": (
        "failure_id",
        """
        failure_id VARCHAR NOT NULL,    -- the id the successful row would get (retried on the next run)
        task VARCHAR NOT NULL,          -- 'generate' | 'judge'
        model VARCHAR NOT NULL,
        prompt_id VARCHAR,
        error VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        created_at TIMESTAMP NOT NULL
        """,
    ),
    "snapshots": (
        "snapshot_id",
        """
        snapshot_id VARCHAR NOT NULL,   -- content hash of the snapshot file's pair rows + config
        round INTEGER NOT NULL,
        path VARCHAR NOT NULL,          -- relative to the catalog directory
        schema_version VARCHAR NOT NULL,
        base_model VARCHAR NOT NULL,
        seed BIGINT NOT NULL,
        tau DOUBLE,
        n_pairs BIGINT NOT NULL,
        n_matrix BIGINT NOT NULL,
        n_base BIGINT NOT NULL,
        config VARCHAR NOT NULL,        -- JSON of the resolved round configuration
        inputs VARCHAR NOT NULL,        -- JSON: row counts and fingerprints of the input tables
        created_at TIMESTAMP NOT NULL
        """,
    ),
}


def create_statements() -> list[str]:
    return [f"CREATE TABLE IF NOT EXISTS {name} ({body})" for name, (_key, body) in TABLES.items()]


def key_of(table: str) -> str:
    return TABLES[table][0]
