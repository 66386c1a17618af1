"""The length-controlled win rate against alpaca_eval's own `length_controlled_v1` (the PyPI
package, run offline: its hub download of difficulties and gamed-baseline rows is pointed
at a local file holding the very inputs ours gets), and the difficulty estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tso_data.eval.difficulty import estimate_difficulty
from tso_data.eval.length_control import GamedRows, fit_l1_logistic, length_controlled_win_rate


def synthetic_annotations(seed: int, n: int = 240, discrete: bool = False):
    """Annotations in AlpacaEval's form whose preferences depend on the length difference
    and the instruction's difficulty, plus two gamed-baseline variants per instruction."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=n)
    len_1 = rng.integers(200, 2500, size=n)  # the baseline (output_1)
    len_2 = rng.integers(100, 3500, size=n)
    std = (len_1 - len_2) / np.std(len_1 - len_2, ddof=1)
    p = 1.0 / (1.0 + np.exp(-(-1.2 * np.tanh(std) + 0.8 * difficulty - 0.4 + rng.normal(scale=0.5, size=n))))
    preference = 1.0 + (np.round(p) if discrete else p)
    annotations = pd.DataFrame({
        "instruction": [f"instruction {i}" for i in range(n)], "output_1": ["a" * int(k) for k in len_1],
        "output_2": ["b" * int(k) for k in len_2], "generator_1": "base", "generator_2": "model",
        "preference": preference, "annotator": "judge"})
    gamed = []
    for variant in ("verbose", "concise"):
        gamed_len = rng.normal(scale=1.5, size=n)
        label = 1.0 / (1.0 + np.exp(-(-0.9 * np.tanh(gamed_len) + 0.5 * difficulty)))
        gamed += [{"index": i, "instruction_difficulty": difficulty[i], "model": variant, "preference": label[i],
                   "std_delta_len": gamed_len[i], "not_gamed_baseline": False} for i in range(n)]
    return annotations, difficulty, pd.DataFrame(gamed)


@pytest.mark.parametrize("seed,discrete", [(0, False), (1, True), (2, False), (3, True)])
@pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-learn deprecations inside alpaca_eval
def test_lc_win_rate_agrees_with_alpaca_eval_to_a_tenth_of_a_point(seed, discrete, alpaca_eval_metrics, tmp_path,
                                                                   monkeypatch) -> None:
    annotations, difficulty, gamed = synthetic_annotations(seed, discrete=discrete)
    gamed.to_csv(tmp_path / "df_gamed.csv", index=False)
    glm = alpaca_eval_metrics.glm
    monkeypatch.setattr(glm, "hf_hub_download", lambda **_: str(tmp_path / "df_gamed.csv"))
    theirs = glm.get_length_controlled_winrate(annotations.copy(), save_weights_dir=None)
    no_reg = dict(glm.GLM_INFO["length_controlled_v1"], regularize_to_baseline_lambda=None)
    theirs_plain = glm.get_length_controlled_winrate(annotations.copy(), save_weights_dir=None, glm_info=no_reg)

    lengths = annotations["output_2"].str.len().to_numpy(), annotations["output_1"].str.len().to_numpy()
    rows = GamedRows(gamed["preference"].to_numpy(), gamed["std_delta_len"].to_numpy(),
                     gamed["instruction_difficulty"].to_numpy())
    ours = length_controlled_win_rate(annotations["preference"].to_numpy(), *lengths, difficulty, gamed=rows)
    ours_plain = length_controlled_win_rate(annotations["preference"].to_numpy(), *lengths, difficulty)
    assert ours is not None and ours_plain is not None
    assert ours.win_rate == pytest.approx(theirs["length_controlled_winrate"], abs=0.1)
    assert ours.standard_error == pytest.approx(theirs["lc_standard_error"], abs=0.1)
    assert ours_plain.win_rate == pytest.approx(theirs_plain["length_controlled_winrate"], abs=0.1)
    # and length control matters here: the raw win rate is elsewhere
    assert abs(ours.win_rate - theirs["win_rate"]) > 1.0


def test_the_l1_fit_reaches_the_optimum() -> None:
    """No step of any coordinate lowers the objective at the fitted weights."""
    rng = np.random.default_rng(5)
    X = np.column_stack([np.tanh(rng.normal(size=300)), rng.normal(size=300), np.ones(300)])
    y = 1.0 / (1.0 + np.exp(-(X @ np.array([-1.0, 0.6, 0.2]) + rng.normal(scale=0.7, size=300))))
    weight, C = rng.uniform(0.5, 1.5, size=300), 0.05

    def objective(w: np.ndarray) -> float:
        z = X @ w
        return C * float(weight @ (y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z))) + float(np.abs(w).sum())

    w = fit_l1_logistic(X, y, weight, C)
    best = objective(w)
    for j in range(3):
        for step in (1e-3, -1e-3, 1e-5, -1e-5):
            moved = w.copy()
            moved[j] += step
            assert objective(moved) >= best - 1e-10


def test_estimated_difficulty_tracks_the_true_one_as_models_grow() -> None:
    rng = np.random.default_rng(0)
    n_prompts = 400
    truth = rng.normal(size=n_prompts)
    correlations = {}
    for n_models in (2, 30):
        model = np.repeat(np.arange(n_models), n_prompts)
        prompt = np.tile(np.arange(n_prompts), n_models)
        length = np.tanh(rng.normal(size=model.size))
        logit = rng.normal(size=n_models)[model] + truth[prompt] - 0.7 * length
        label = (rng.uniform(size=model.size) < 1 / (1 + np.exp(-logit))).astype(float)
        estimate = estimate_difficulty(model, prompt, label, length, n_prompts)
        correlations[n_models] = float(np.corrcoef(estimate, truth)[0, 1])
        assert np.all(np.isfinite(estimate))
    assert correlations[30] > 0.9 and correlations[2] < correlations[30]


def test_too_few_prompts_give_no_lc_win_rate() -> None:
    assert length_controlled_win_rate(np.array([2.0, 1.0, 1.5]), np.ones(3), np.ones(3), np.zeros(3)) is None
