"""`tso-data eval`: a leaderboard of the model matrix and every round's policy — pointwise
scores with paired statistics, and AlpacaEval-compatible pairwise win rates.

    from tso_data.eval import leaderboard
    board = leaderboard("catalogs/mine", judge="judge-7b", family="acme", baseline="acme-v1-7b")
    board.table                       # Polars: one row per model
    run = run_eval("catalogs/mine", EvalSpec(judge="judge-7b", family="acme", baseline="acme-v1-7b"))
"""

from tso_data.eval.board import Leaderboard
from tso_data.eval.pipeline import EvalRun, EvalSpec, run_eval
from tso_data.eval.run import leaderboard

__all__ = ["EvalRun", "EvalSpec", "Leaderboard", "leaderboard", "run_eval"]
