"""`tso-train`: the trainer's command-line entry point."""

from __future__ import annotations

import click

from tso_train import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tso-train")
def cli() -> None:
    """Train on TSO pair snapshots: mini-batch-iterative DPO with the dual-clip reward loss
    (and DPO, IPO, cDPO baselines) on DeepSpeed."""


@cli.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--hidden-size", default=64, show_default=True)
@click.option("--layers", default=2, show_default=True)
@click.option("--seed", default=0, show_default=True)
def tiny_model_cmd(out_dir: str, hidden_size: int, layers: int, seed: int) -> None:
    """Build a tiny random Llama + tokenizer in OUT_DIR (offline; for trying the tools)."""
    from tso_train.tiny import build_tiny_causal_lm

    path = build_tiny_causal_lm(out_dir, hidden_size=hidden_size, num_layers=layers, seed=seed)
    click.echo(f"tiny model saved to {path}")
