"""round.toml loading, overrides and pool-resolution errors."""

from __future__ import annotations

import pytest
from build_frames import models_frame

from tso_data.errors import TSODataError
from tso_data.pairs.config import load_round_config
from tso_data.pairs.pools import resolve_pools


def write(tmp_path, text: str):
    path = tmp_path / "round.toml"
    path.write_text(text)
    return path


def test_defaults_round_tables_and_flags_layer(tmp_path) -> None:
    path = write(tmp_path,
                 'base_model = "f-v2-7b"\npairs = 100\n[round.2]\npairs = 200\n[round.2.mix]\nmatrix = 3\nbase = 1\n')
    r1 = load_round_config(path, 1)
    assert (r1.pairs, r1.seed, r1.mix_matrix, r1.tau_mode, r1.pairing) == (100, 43, 0.5, "global-mean", "best-worst")
    r2 = load_round_config(path, 2)
    assert (r2.pairs, r2.mix_matrix, r2.mix_base) == (200, 0.75, 0.25)
    r2b = load_round_config(path, 2, {"pairs": 7})
    assert r2b.pairs == 7


@pytest.mark.parametrize(
    "text, message",
    [
        ('base_model = "x"\nsed = 1\n', "unknown key 'sed'"),
        ('base_model = "x"\n[tau]\nmod = "fixed"\n', "unknown key 'tau.mod'"),
        ('base_model = "x"\n[round.1]\nparis = 3\n', "unknown key 'paris'"),
        ('base_model = "x"\n[negative]\nweights = { a = -1 }\n', "weights must be >= 0"),
        ('base_model = "x"\n[positive]\nweights = { human = 0 }\n', "weights sum to zero"),
        ('base_model = "x"\n[mix]\nmatrix = 0\nbase = 0\n', "weights sum to zero"),
        ('pairs = 3\n', "field 'base_model': required"),
        ('base_model = "x"\npairs = 0\n', "field 'pairs'"),
        ('base_model = "x"\n[tau]\nmode = "fixed"\n', "field 'tau.value'"),
        ('base_model = "x"\n[base_pairs]\npairing = "best"\n', "field 'base_pairs.pairing'"),
        ('base_model = "x"\n[positive]\nsources = ["older-or-smaller"]\n', "negative-pool rule"),
        ('base_model = = 1\n', "invalid TOML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TSODataError, match=message.replace("(", r"\(")) as err:
        load_round_config(path, 1)
    assert str(path) in str(err.value) or "round.toml" in str(err.value) or message in str(err.value)


def test_pool_rules() -> None:
    models = models_frame()
    pools = resolve_pools(load_round_config(None, 1, {"base_model": "f-v2-7b"}), models)
    assert pools.positive == {"f-v2-70b": 0.5, "human": 0.5}
    assert set(pools.negative) == {"f-v1-1b", "f-v2-1b", "f-v1-7b"}
    assert all(w == pytest.approx(1 / 3) for w in pools.negative.values())
    and_config = load_round_config(None, 1, {"base_model": "f-v2-7b", "negative": {"sources": ["older-and-smaller"]}})
    and_rule = resolve_pools(and_config, models)
    assert set(and_rule.negative) == {"f-v1-1b"}


def test_base_in_negative_pool_warns_reverse_alignment() -> None:
    cfg = load_round_config(None, 1, {"base_model": "f-v2-7b", "negative": {"sources": ["f-v2-7b", "f-v1-7b"]}})
    pools = resolve_pools(cfg, models_frame())
    assert any("reverse alignment" in w for w in pools.warnings)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"base_model": "nope"}, "base_model 'nope' is not in the models table"),
        ({"base_model": "f-v1-1b", "negative": {"sources": ["older-and-smaller"]}}, "negative pool is empty"),
        ({"base_model": "f-v2-70b"}, "resolves to the base model"),
        ({"base_model": "f-v2-7b", "negative": {"sources": ["ghost"]}}, "unknown source 'ghost'"),
        ({"base_model": "f-v2-7b", "negative": {"weights": {"ghost": 1}}}, "'ghost' is neither"),
        ({"base_model": "f-v2-7b", "negative": {"sources": ["human"]}}, "also a positive source"),
    ],
)
def test_bad_pools(over, message: str) -> None:
    with pytest.raises(TSODataError, match=message):
        resolve_pools(load_round_config(None, 1, over), models_frame())
