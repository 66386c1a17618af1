"""The answers a round may use, as integer columns: the input of every draw.

Prompts get dense *codes* (a prompt's code is its row in the round's prompts frame), sources
an index into the round's sorted source names, answers the integer key of their content-hash
id. Codes depend on row order, so they never key a random draw: draws are keyed on the ids'
integer keys (:mod:`tso_data.pairs.sampling`). Strings stay in ``texts`` until the end.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from tso_data.pairs.config import RoundConfig

if TYPE_CHECKING:
    from tso_data.pairs.core import BuildInputs


def id_key(ids: pl.Series) -> pl.Series:
    """The 64-bit integer of a content-hash id (16 hex digits); other ids fall back to a hash
    (computed only when some id is not hex: an expression would hash every row).

    >>> id_key(pl.Series(["00000000000000ff", "not hex"])).to_list()[0]
    255
    """
    return fill_key(ids.str.to_integer(base=16, dtype=pl.UInt64, strict=False), ids)


def hex_key(ids: pl.Expr) -> pl.Expr:
    """:func:`id_key` as an expression, without the fallback (see :func:`fill_key`)."""
    return ids.str.to_integer(base=16, dtype=pl.UInt64, strict=False)


def fill_key(keys: pl.Series, ids: pl.Series) -> pl.Series:
    """Keys of :func:`hex_key` with the ids that are not hex hashed in."""
    return keys if keys.null_count() == 0 else keys.fill_null(ids.hash(seed=7))


@dataclass
class Candidates:
    """The answers a round may use.

    ``rows``: answer_row (the answer's row in ``texts``), prompt_code, source_index (into
    ``sources``), answer_key, score (null = unscored or failed). ``prompt_keys[code]`` is the
    integer key of the prompt id of that code.
    """

    rows: pl.DataFrame
    texts: pl.DataFrame  # prompt_id, source, target_id, turns
    sources: list[str]
    prompt_keys: np.ndarray  # uint64 per prompt code
    prompt_ids: pl.Series  # per prompt code

    @property
    def n_codes(self) -> int:
        return len(self.prompt_keys)

    @cached_property
    def turns(self) -> pl.Series:
        # one contiguous buffer: random gathers from a chunked column are much slower
        return self.texts.get_column("turns").rechunk()

    @cached_property
    def target_ids(self) -> pl.Series:
        return self.texts.get_column("target_id").rechunk()

    def same_text(self, rows_a: np.ndarray, rows_b: np.ndarray) -> np.ndarray:
        """Whether texts[a].turns == texts[b].turns, row by row."""
        turns_a = self.turns.gather(pl.Series(rows_a, dtype=pl.UInt32))
        turns_b = self.turns.gather(pl.Series(rows_b, dtype=pl.UInt32))
        single_turns = turns_a.len() and max(turns_a.list.len().max(), turns_b.list.len().max()) == 1  # type: ignore[type-var]
        if single_turns:  # compare the strings
            same = turns_a.list.first().eq_missing(turns_b.list.first())
        else:
            same = turns_a.eq_missing(turns_b)
        return same.to_numpy()


def find_candidates(
    inputs: BuildInputs, config: RoundConfig, sources: list[str], base_model: str
) -> tuple[Candidates, dict[str, int]]:
    """All answers of ``sources`` to the round's prompts; answers whose number of turns
    differs from the prompt's n_turns are dropped and counted."""
    prompts = inputs.prompts
    if "split" in prompts.columns and config.split:
        prompts = prompts.filter(pl.col("split") == config.split)
    texts = pl.concat([
        inputs.answers.select("prompt_id", "source", pl.col("answer_id").alias("target_id"), "turns"),
        inputs.responses.select(
            "prompt_id", pl.col("model").alias("source"), pl.col("response_id").alias("target_id"), "turns"
        ),
    ], how="vertical_relaxed")
    # every per-answer column in one parallel pass; strings are never touched again
    slim = texts.select(
        answer_key=hex_key(pl.col("target_id")),
        prompt_key=hex_key(pl.col("prompt_id")),
        source_index=pl.col("source").cast(pl.Enum(sources), strict=False).to_physical().cast(pl.UInt16),
        n_turns=pl.col("turns").list.len().cast(pl.Int32),
    )
    answer_key = fill_key(slim["answer_key"], texts.get_column("target_id")).to_numpy()
    source_index = slim["source_index"].fill_null(len(sources)).to_numpy()  # len(sources): not a source
    prompt_keys = id_key(prompts.get_column("prompt_id"))
    if prompt_keys.n_unique() != prompt_keys.len():  # the catalog keeps prompts unique; a frame may not
        prompts = prompts.unique("prompt_id", keep="first", maintain_order=True)
        prompt_keys = id_key(prompts.get_column("prompt_id"))
    keys = prompt_keys.to_numpy()
    with ThreadPoolExecutor(max_workers=2) as threads:
        coding = threads.submit(_prompt_codes, keys, fill_key(slim["prompt_key"], texts.get_column("prompt_id")))
        score = _scores_of(source_index, answer_key, _score_table(inputs.scores), sources.index(base_model))
        # the score column (NaN → null) beside the mask below, which needs the codes
        scores = threads.submit(pl.Series, "score", score, nan_to_null=True)
        prompt_code = coding.result()
        n_turns = np.full(len(keys) + 1, -1, dtype=np.int32)  # the last code: not a prompt of the round
        n_turns[:-1] = prompts.get_column("n_turns").cast(pl.Int32).to_numpy()
        turns_wanted = n_turns[prompt_code]
        used = (turns_wanted >= 0) & (source_index < len(sources))
        complete = turns_wanted == slim["n_turns"].to_numpy()
        n_incomplete = int((used & ~complete).sum())
        keep = used & complete
        if not keep.all():
            answer_row = np.flatnonzero(keep)
            prompt_code, source_index = prompt_code[answer_row], source_index[answer_row]
            answer_key = answer_key[answer_row]
            score_column = scores.result().gather(pl.Series(answer_row))
        else:  # the usual case: every answer is used, nothing to gather
            answer_row = np.arange(len(keep), dtype=np.uint32)
            score_column = scores.result()
    rows = pl.DataFrame({
        "answer_row": answer_row.astype(np.uint32, copy=False),
        "prompt_code": prompt_code.astype(np.uint32, copy=False),
        "source_index": source_index.astype(np.uint16, copy=False),
        "answer_key": answer_key,
        "score": score_column,
    })
    if len(keys) == 0:  # one spare code, so that every per-code array has a row
        keys = np.zeros(1, dtype=np.uint64)
    found = Candidates(rows, texts, sources, keys, prompts.get_column("prompt_id").rechunk())
    return found, {"answers with a wrong number of turns": n_incomplete}


def _prompt_codes(prompt_keys: np.ndarray, answer_prompt_keys: pl.Series) -> np.ndarray:
    """Each answer's prompt code (``len(prompt_keys)`` when the prompt is not one of the
    round's), by an integer join in place of a join on strings. The matches are scattered by
    row, so their order does not matter: the streaming engine joins in pieces, without the
    whole joined frame (keys included) in memory."""
    table = pl.LazyFrame({"prompt_key": prompt_keys, "prompt_code": np.arange(len(prompt_keys), dtype=np.uint32)})
    found = (
        pl.LazyFrame({"prompt_key": answer_prompt_keys}).with_row_index("row")
        .join(table, on="prompt_key", how="inner").select("row", "prompt_code").collect(engine="streaming")
    )
    codes = np.full(answer_prompt_keys.len(), len(prompt_keys), dtype=np.uint32)
    codes[found["row"].to_numpy()] = found["prompt_code"].to_numpy()
    return codes


def _score_table(scores: pl.DataFrame) -> pl.DataFrame:
    """The scores table keyed by integer answer key: answer_key, score (NaN for a null score)."""
    return pl.DataFrame({
        "answer_key": id_key(scores.get_column("target_id")),
        "score": scores.get_column("score").cast(pl.Float64).fill_null(np.nan),
    })


def _scores_of(source_index: np.ndarray, answer_key: np.ndarray, left: pl.DataFrame, base_index: int) -> np.ndarray:
    """Each answer's score (NaN where unscored), by inner joins of :func:`_score_table`'s
    table, scattered back by row.

    Judges score the base model's answers above all, so those rows are matched first and the
    other rows only with the scores left over: most builds probe a fraction of the rows."""
    out = np.full(len(source_index), np.nan)
    for is_base in (True, False):
        if left.height == 0:
            break
        rows = np.flatnonzero(source_index == base_index) if is_base else np.flatnonzero(source_index != base_index)
        found = (
            pl.LazyFrame({"answer_key": answer_key[rows], "row": rows})
            .join(left.lazy(), on="answer_key", how="inner").collect()
        )
        out[found["row"].to_numpy()] = found["score"].to_numpy()
        # one score per target and one row per answer id, so all matched iff as many found
        if found.height >= left.height:
            left = left.head(0)
        else:
            left = left.join(found.select("answer_key"), on="answer_key", how="anti")
    return out
