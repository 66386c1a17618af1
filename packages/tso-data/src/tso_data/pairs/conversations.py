"""Pairs → TRL conversational columns: ``prompt``, ``chosen``, ``rejected`` message lists
(docs/design.md, "4. The snapshot contract").

Multi-turn prompts (k user turns answered turn by turn): ``prompt`` holds every message up
to and including the first answered user turn (system messages stay there); ``chosen`` and
``rejected`` hold that answer's continuation [assistant_1, user_2, assistant_2, …,
assistant_k], so the trainer scores the whole conversation and masks the user tokens.
Single-turn: ``chosen`` = [assistant].
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


def split_conversation(messages: list[dict[str, str]], n_turns: int,
                       turns: list[str]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(prompt, continuation) for an answer ``turns`` to the last ``n_turns`` user messages.

    >>> msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
    ...         {"role": "user", "content": "And?"}]
    >>> prompt, cont = split_conversation(msgs, 2, ["Hello", "Bye"])
    >>> [m["role"] for m in prompt], [(m["role"], m["content"]) for m in cont]
    (['system', 'user'], [('assistant', 'Hello'), ('user', 'And?'), ('assistant', 'Bye')])
    >>> split_conversation([{"role": "user", "content": "Q"}], 1, ["A"])[1]
    [{'role': 'assistant', 'content': 'A'}]
    """
    user_idx = [i for i, m in enumerate(messages) if m["role"] == "user"]
    answered = user_idx[len(user_idx) - n_turns:]
    first = answered[0]
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[: first + 1]]
    continuation: list[dict[str, str]] = []
    for k, start in enumerate(answered):
        if k > 0:
            continuation.extend(
                {"role": m["role"], "content": m["content"]} for m in messages[answered[k - 1] + 1 : start + 1]
            )
        continuation.append({"role": "assistant", "content": turns[k]})
    return prompt, continuation


@dataclass(frozen=True)
class PromptIndex:
    """Each pair's prompt, found once: its messages (one contiguous column), the pair's row
    in it and the prompt's number of answered turns. Chunks of the pairs then gather."""

    messages: pl.Series
    row: pl.Series  # per pair
    n_turns: pl.Series  # per pair

    @classmethod
    def of(cls, pairs: pl.DataFrame, prompts: pl.DataFrame) -> PromptIndex:
        # join on the slim key, then gather the messages (moving list columns through a join is slow)
        index = prompts.select("prompt_id", pl.col("n_turns").cast(pl.Int64)).with_row_index("prompt_row")
        joined = pairs.select("prompt_id").join(index, on="prompt_id", how="left", maintain_order="left")
        messages = prompts.get_column("messages")
        return cls(messages.rechunk() if messages.n_chunks() > 1 else messages, joined["prompt_row"], joined["n_turns"])

    def slice(self, offset: int, length: int) -> PromptIndex:
        return PromptIndex(self.messages, self.row.slice(offset, length), self.n_turns.slice(offset, length))


def to_conversations(pairs: pl.DataFrame, prompts: pl.DataFrame) -> pl.DataFrame:
    """Add ``prompt``, ``chosen``, ``rejected`` message lists to the pairs of
    :func:`tso_data.pairs.core.build_pairs` (vectorised for single-turn prompts)."""
    return conversations(pairs, PromptIndex.of(pairs, prompts))


def conversations(pairs: pl.DataFrame, index: PromptIndex) -> pl.DataFrame:
    """:func:`to_conversations` for pairs whose prompts are already found (a chunk of them)."""
    joined = pairs.with_columns(messages=index.messages.gather(index.row), n_turns=index.n_turns)
    single = joined.filter(pl.col("n_turns") == 1)

    def assistant(col: str) -> pl.Expr:
        return pl.concat_list(
            pl.struct(pl.lit("assistant").alias("role"), pl.col(col).list.first().alias("content"))
        )

    single = single.with_columns(
        prompt=pl.col("messages").list.eval(pl.struct(pl.element().struct.field("role"),
                                                      pl.element().struct.field("content"))),
        chosen=assistant("chosen_turns"),
        rejected=assistant("rejected_turns"),
    )
    multi = joined.filter(pl.col("n_turns") != 1)
    if multi.height:
        prompts_col, chosen_col, rejected_col = [], [], []
        for row in multi.select("messages", "n_turns", "chosen_turns", "rejected_turns").iter_rows():
            messages, n_turns, ct, rt = row
            p, c = split_conversation(messages, n_turns, ct)
            _, r = split_conversation(messages, n_turns, rt)
            prompts_col.append(p)
            chosen_col.append(c)
            rejected_col.append(r)
        dtype = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
        multi = multi.with_columns(
            prompt=pl.Series(prompts_col, dtype=dtype),
            chosen=pl.Series(chosen_col, dtype=dtype),
            rejected=pl.Series(rejected_col, dtype=dtype),
        )
        single = pl.concat([single, multi], how="vertical_relaxed")
    return single.drop("messages", "n_turns")
