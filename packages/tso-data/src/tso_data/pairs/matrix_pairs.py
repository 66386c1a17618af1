"""Matrix pairs (docs/design.md, "1. The method", Pairs): for a prompt, the chosen answer is
drawn from the positive pool M_w and the rejected from the negative pool M_l, each by
:class:`~tso_data.pairs.sampling.WeightedPool` (a source by weight among those that answered
the prompt, then one of its answers). Negatives whose text equals the chosen text are left
out of the rejected draw: a pair of equal texts is no pair."""

from __future__ import annotations

import numpy as np
import polars as pl

from tso_data.pairs.candidates import Candidates
from tso_data.pairs.config import RoundConfig
from tso_data.pairs.pools import ResolvedPools
from tso_data.pairs.sampling import Stream, WeightedPool
from tso_data.pairs.selection import SLOT, Kind, make_slots, side_columns, take_side

POSITIVE_STREAMS = (Stream.POSITIVE_SOURCE, Stream.POSITIVE_ANSWER)
NEGATIVE_STREAMS = (Stream.NEGATIVE_SOURCE, Stream.NEGATIVE_ANSWER)


def matrix_kind(
    candidates: Candidates, pools: ResolvedPools, config: RoundConfig
) -> tuple[Kind, dict[str, int]]:
    """The matrix pairs' slots (prompts with a positive and a negative answer) and draw."""
    def pool(weights: dict[str, float]) -> WeightedPool:
        by_index = {candidates.sources.index(source): weight for source, weight in weights.items()}
        return WeightedPool(candidates.rows, candidates.n_codes, by_index, len(candidates.sources))

    positive, negative = pool(pools.positive), pool(pools.negative)
    has_positive, has_negative = positive.has_answer(), negative.has_answer()
    skipped = {
        "matrix: no positive answer": int((has_negative & ~has_positive).sum()),
        "matrix: no negative answer": int((has_positive & ~has_negative).sum()),
    }
    slots = make_slots(candidates, np.flatnonzero(has_positive & has_negative), config.max_pairs_per_prompt)

    def draw(batch: pl.DataFrame) -> pl.DataFrame:
        prompt_code, draw_index = batch["prompt_code"].to_numpy(), batch["draw_index"].to_numpy()
        prompt_key = batch["prompt_key"].to_numpy()
        chosen = positive.draw(prompt_code, draw_index, prompt_key, config.seed, POSITIVE_STREAMS)
        rejected = negative.draw(prompt_code, draw_index, prompt_key, config.seed, NEGATIVE_STREAMS)
        pairs = batch.select(SLOT).with_columns(
            **take_side(candidates.rows, chosen, "chosen"), **take_side(candidates.rows, rejected, "rejected")
        )
        same = candidates.same_text(pairs["chosen_answer_row"].to_numpy(), pairs["rejected_answer_row"].to_numpy())
        if same.any():  # the rejected must differ from the chosen: draw again among those that do
            redrawn = _redraw_rejected(candidates, negative, pairs.filter(pl.Series(same)), config.seed)
            pairs = pl.concat([pairs.filter(pl.Series(~same)), redrawn])
        return pairs

    return Kind("matrix", slots, draw, Stream.ORDER_MATRIX), skipped


def _redraw_rejected(
    candidates: Candidates, negative: WeightedPool, pairs: pl.DataFrame, seed: int
) -> pl.DataFrame:
    """The rejected answers of ``pairs`` drawn again among the negatives whose text differs
    from the chosen. Drawing among those gives what drawing among all did wherever the
    winner's text differed (a race's winner stays the winner when losers leave), so only
    these slots need it. A slot whose negatives all equal the chosen text gives no pair."""
    negatives = candidates.rows.with_row_index("row").filter(pl.col("source_index").is_in(list(negative.weights)))
    slots = pairs.with_row_index("slot").select("slot", "prompt_code", "chosen_answer_row")
    allowed = negatives.join(slots, on="prompt_code")
    differs = ~candidates.same_text(allowed["answer_row"].to_numpy(), allowed["chosen_answer_row"].to_numpy())
    allowed = allowed.filter(pl.Series(differs)).select("slot", "row", "source_index", "answer_key")
    drawn = negative.draw_among(
        allowed, pairs["prompt_code"].to_numpy(), pairs["draw_index"].to_numpy(),
        candidates.prompt_keys[pairs["prompt_code"].to_numpy()], seed, NEGATIVE_STREAMS,
    )
    kept = pairs.select(*SLOT, *side_columns("chosen"))[pl.Series(drawn["slot"].to_numpy(), dtype=pl.Int64)]
    return kept.with_columns(**take_side(candidates.rows, drawn["row"].to_numpy(), "rejected"))
