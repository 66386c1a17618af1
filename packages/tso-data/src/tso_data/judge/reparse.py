"""Re-parsing: the stored raw texts of model judges through the current score parser, after a
parser change (`tso-data judge --reparse`); no model is called.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pyarrow as pa

from tso_data.catalog import Catalog
from tso_data.judge.function_judge import FUNCTION_PREFIX
from tso_data.judge.parsing import parse_score
from tso_data.shards import merge_shards


def reparse(catalog: Catalog, *, judge: str | None = None, rubrics: Iterable[str] = ()) -> Counter[str]:
    """Re-parse stored raw judge texts with the current parser; no model is called.

    Touches rows of model judges with status ``ok`` or ``unparsed`` (``error`` rows hold an
    error message, function judges have no text to parse). Returns transitions such as
    ``{'unparsed->ok': 3, 'ok->ok': 10}``; an ``ok`` row whose score changed counts as
    ``ok->ok (score changed)``.
    """
    merge_shards(catalog, "judgments", replace=True)
    conditions = ["status IN ('ok', 'unparsed')", f"judge NOT LIKE '{FUNCTION_PREFIX}%'"]
    params: list[object] = []
    if judge is not None:
        conditions.append("judge = ?")
        params.append(judge)
    rubric_list = list(rubrics)
    if rubric_list:
        conditions.append(f"rubric IN ({', '.join('?' for _ in rubric_list)})")
        params.extend(rubric_list)
    where = " AND ".join(conditions)
    transitions: Counter[str] = Counter()
    with catalog.connect(read_only=False) as con:
        rows = con.sql(
            f"SELECT judgment_id, raw_text, score, status, scale_min, scale_max FROM judgments WHERE {where}",
            params=params or None,
        ).to_arrow_table()
        ids = rows.column("judgment_id").to_pylist()
        texts = rows.column("raw_text").to_pylist()
        old_scores = rows.column("score").to_pylist()
        old_status = rows.column("status").to_pylist()
        lows = rows.column("scale_min").to_pylist()
        highs = rows.column("scale_max").to_pylist()
        new_scores: list[float | None] = []
        new_status: list[str] = []
        for text, lo, hi, before, before_score in zip(texts, lows, highs, old_status, old_scores):
            if lo is None or hi is None:
                parsed_score, parsed_status = None, "unparsed"
            else:
                p = parse_score(text, lo, hi)
                parsed_score, parsed_status = p.score, p.status
            new_scores.append(parsed_score)
            new_status.append(parsed_status)
            key = f"{before}->{parsed_status}"
            if before == parsed_status == "ok" and before_score != parsed_score:
                key = "ok->ok (score changed)"
            transitions[key] += 1
        update = pa.table(
            {"judgment_id": ids, "new_score": pa.array(new_scores, pa.float64()), "new_status": new_status}
        )
        con.register("_reparsed", update)
        con.execute(
            "UPDATE judgments SET score = u.new_score, status = u.new_status "
            "FROM _reparsed u WHERE judgments.judgment_id = u.judgment_id "
            "AND (judgments.status IS DISTINCT FROM u.new_status OR judgments.score IS DISTINCT FROM u.new_score)"
        )
        con.unregister("_reparsed")
    return transitions

