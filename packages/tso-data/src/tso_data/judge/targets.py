"""Which answers to judge: responses and human answers, as one SQL view over the catalog."""

from __future__ import annotations

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.errors import TSODataError
from tso_data.sql_guard import check_filter

# Columns a `--where` filter may use.
TARGETS_SQL = """
SELECT r.response_id AS target_id, 'response' AS target_kind, r.prompt_id, r.model AS source,
       r.sample_index AS response_index, r.turns, p.messages, p.n_turns, p.category, p.split,
       p.source AS prompt_source
FROM responses r JOIN prompts p USING (prompt_id)
UNION ALL
SELECT a.answer_id, 'answer', a.prompt_id, a.source, 0, a.turns, p.messages, p.n_turns,
       p.category, p.split, p.source
FROM answers a JOIN prompts p USING (prompt_id)
"""
TARGET_COLUMNS = (
    "target_id, target_kind, prompt_id, source, response_index, turns, messages, n_turns, "
    "category, split, prompt_source"
)


def select_targets(
    catalog: Catalog,
    *,
    source: str | None = None,
    where: str | None = None,
    reference_source: str | None = None,
) -> pa.Table:
    """Targets (one row per response/answer) filtered by source and a SQL condition.

    ``reference`` is the first answer of ``reference_source`` for the prompt (or null).
    """
    ref_join = ""
    ref_col = "CAST(NULL AS VARCHAR[]) AS reference"
    params: list[object] = []
    if reference_source is not None:
        ref_join = (
            "LEFT JOIN (SELECT prompt_id, arg_min(turns, answer_id) AS reference FROM answers "
            "WHERE source = ? GROUP BY prompt_id) ref USING (prompt_id)"
        )
        ref_col = "ref.reference"
        params.append(reference_source)
    conditions = ["TRUE"]
    if source is not None:
        conditions.append("t.source = ?")
        params.append(source)
    if where:
        check_filter("--where", where)
        conditions.append(f"({where})")
    sql = (
        f"SELECT t.*, {ref_col} FROM ({TARGETS_SQL}) t {ref_join} "
        f"WHERE {' AND '.join(conditions)} ORDER BY t.prompt_id, t.source, t.response_index, t.target_id"
    )
    try:
        return catalog.arrow(sql, params)
    except TSODataError:
        raise
    except Exception as exc:  # duckdb parser/binder errors from a user's --where
        if where:
            raise TSODataError(
                f"--where {where!r}: {str(exc).splitlines()[0]} (columns: {TARGET_COLUMNS})"
            ) from None
        raise
