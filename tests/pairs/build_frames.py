"""Synthetic catalog frames for the pure-core tests."""

from __future__ import annotations

import polars as pl

from tso_data import ids
from tso_data.pairs.config import load_round_config
from tso_data.pairs.core import BuildInputs

# family "f": base f-v2-7b; newest-largest f-v2-70b; negatives (older-or-smaller) f-v1-7b, f-v2-1b, f-v1-1b;
# f-v3-7b is newer and not smaller: in no pool.
CELLS = [("f-v1-1b", 1, 1.0), ("f-v2-1b", 2, 1.0), ("f-v1-7b", 1, 7.0), ("f-v2-7b", 2, 7.0),
         ("f-v3-7b", 3, 7.0), ("f-v2-70b", 2, 70.0)]
BASE = "f-v2-7b"
POSITIVE = {"f-v2-70b", "human"}
NEGATIVE = {"f-v1-1b", "f-v2-1b", "f-v1-7b"}
MSG = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def models_frame() -> pl.DataFrame:
    rows = [{"name": "human", "kind": "human", "family": None, "version": None, "version_order": None, "size_b": None}]
    rows += [{"name": n, "kind": "model", "family": "f", "version": str(v), "version_order": v,
              "size_b": s} for n, v, s in CELLS]
    return pl.DataFrame(rows, schema={"name": pl.String, "kind": pl.String, "family": pl.String, "version": pl.String,
                                      "version_order": pl.Int64, "size_b": pl.Float64})


def make_inputs(spec: list[dict]) -> BuildInputs:
    """spec: per prompt {"answers": [(source, text)], "base": [(text, score or None)]}."""
    prompts, answers, responses, scores = [], [], [], []
    for i, p in enumerate(spec):
        msgs = [{"role": "user", "content": f"prompt {i}"}]
        pid = ids.prompt_id(msgs)
        prompts.append({"prompt_id": pid, "messages": msgs, "n_turns": 1, "split": p.get("split", "train")})
        for j, (source, text) in enumerate(p["answers"]):
            if source == "human":
                answers.append({"answer_id": ids.answer_id(pid, source, [text, str(j)]), "prompt_id": pid,
                                "source": source, "turns": [text]})
            else:
                responses.append({"response_id": ids.response_id(pid, source, "s", j), "prompt_id": pid,
                                  "model": source, "turns": [text]})
        for j, (text, score) in enumerate(p.get("base", [])):
            rid = ids.response_id(pid, BASE, "s", 100 + j)
            responses.append({"response_id": rid, "prompt_id": pid, "model": BASE, "turns": [text]})
            if score is not None:
                scores.append({"target_id": rid, "score": float(score)})
    return BuildInputs(
        prompts=pl.DataFrame(prompts,
                             schema={"prompt_id": pl.String, "messages": MSG, "n_turns": pl.Int32, "split": pl.String}),
        answers=pl.DataFrame(answers,
                             schema={"answer_id": pl.String, "prompt_id": pl.String, "source": pl.String,
                                     "turns": pl.List(pl.String)}),
        responses=pl.DataFrame(responses,
                               schema={"response_id": pl.String, "prompt_id": pl.String, "model": pl.String,
                                       "turns": pl.List(pl.String)}),
        scores=pl.DataFrame(scores, schema={"target_id": pl.String, "score": pl.Float64}),
    )


def config(**over):
    over.setdefault("base_model", BASE)
    return load_round_config(None, 1, over)


