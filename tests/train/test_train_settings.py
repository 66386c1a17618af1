"""One source of truth: the CLI's options are the config dataclasses' fields, with their
defaults (the paper's for `fit`), and the loss names are one list."""

from __future__ import annotations

from dataclasses import fields

import click
import pytest

from tso_train.cli import cli
from tso_train.settings import LOSS_NAMES, LOSS_PARAMETERS, NOT_FLAGS, FitConfig, SFTConfig, defaults, flag

COMMANDS = [("fit", FitConfig, "snapshot"), ("sft", SFTConfig, "data")]


def _parameters(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in cli.commands[command].params if p.name != "help"}


@pytest.mark.parametrize(("command", "config", "argument"), COMMANDS)
def test_every_setting_is_an_option_with_the_same_default_and_vice_versa(command, config, argument):
    params = _parameters(command)
    settings = [f.name for f in fields(config) if f.name not in NOT_FLAGS]
    assert sorted(params) == sorted(settings)
    assert isinstance(params[argument], click.Argument)
    field_defaults = defaults(config)
    ctx = click.Context(cli.commands[command])
    for name, param in params.items():
        if name == argument:
            continue
        assert param.opts[0] == flag(name)
        if name not in field_defaults:
            assert param.required, name
            continue
        assert not param.required, name
        default = param.get_default(ctx)
        shown = default if default is None else param.type_cast_value(ctx, default)
        if param.is_flag and not param.secondary_opts:
            shown = bool(default)
        assert shown == field_defaults[name], name
        assert type(shown) is type(field_defaults[name]), name


def test_the_paper_defaults_live_in_fit_config():
    """TSO, Appendix C.2 (docs/design.md, 1. The method)."""
    paper = {"beta": 0.1, "lr": 1e-6, "weight_decay": 0.05, "adam_betas": (0.9, 0.95), "adam_eps": 1e-8,
             "gamma_w": 20.0, "gamma_l": 10.0, "ipo_tau": 0.2, "cdpo_eps": 0.3, "parts": 3, "epochs": 2,
             "global_batch": 256, "grad_clip": 1.0, "seed": 43, "loss": "dual-clip"}
    assert {k: defaults(FitConfig)[k] for k in paper} == paper


def test_the_loss_choices_are_the_loss_names():
    assert tuple(_parameters("fit")["loss"].type.choices) == LOSS_NAMES == tuple(LOSS_PARAMETERS)
    assert all(set(p) <= set(defaults(FitConfig)) for p in LOSS_PARAMETERS.values())
