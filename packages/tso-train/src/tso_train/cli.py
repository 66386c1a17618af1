"""`tso-train`: the trainer's command-line entry point."""

from __future__ import annotations

import gc
import sys

import click

from tso_train import __version__
from tso_train.console import quiet_third_party
from tso_train.errors import TSOTrainError
from tso_train.settings import LOSS_NAMES, FitConfig, SFTConfig, defaults, flag
from tso_train.speed import SpeedSwitches


class TrainGroup(click.Group):
    """Bad input → one line `error: …` on stderr and exit status 2: a TSOTrainError, or a flag
    click cannot parse (a command's usage text is one `--help` away)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TSOTrainError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            in_subcommand = exc.ctx is not None and exc.ctx.parent is not None
            command = f"tso-train {exc.ctx.info_name}" if in_subcommand else "tso-train"
            click.echo(f"error: {exc.format_message()} (see {command} --help)", err=True)
            sys.exit(2)


class MaxLength(click.ParamType):
    """A whole number of tokens, or `none` for no limit (0 is not a way to say none)."""

    name = "TOKENS|none"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "none":
            return None
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not a whole number of tokens or 'none'", param, ctx)


@click.group(cls=TrainGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="tso-train")
def cli() -> None:
    """Train on TSO pair snapshots: mini-batch-iterative DPO with the dual-clip reward loss
    (and DPO, IPO, cDPO baselines) on DeepSpeed."""


@cli.command("tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--hidden-size", type=click.IntRange(min=8), default=64, show_default=True,
              help="A multiple of 8 (4 heads).")
@click.option("--layers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=0, show_default=True)
def tiny_model_cmd(out_dir: str, hidden_size: int, layers: int, seed: int) -> None:
    """Build a tiny random Llama + tokenizer in OUT_DIR (offline; for trying the tools)."""
    if hidden_size % 8:
        raise TSOTrainError(f"--hidden-size {hidden_size}: must be a multiple of 8 (4 heads of an even size)")
    _quiet_start()
    from tso_train.tiny import build_tiny_causal_lm

    path = build_tiny_causal_lm(out_dir, hidden_size=hidden_size, num_layers=layers, seed=seed)
    click.echo(f"tiny model saved to {path}")


def _quiet_start() -> None:
    """Before a command that loads torch, transformers or DeepSpeed: their noise off, and
    DeepSpeed told the accelerator (its detection prints to stdout)."""
    quiet_third_party()
    from tso_train.engine import prepare_deepspeed_import

    prepare_deepspeed_import()


class AdamBetas(click.ParamType):
    """Two numbers, ``B1,B2`` (each in [0, 1): checked with the other settings)."""

    name = "B1,B2"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            b1, b2 = (float(x) for x in str(value).split(","))
        except ValueError:
            raise TSOTrainError(f"--adam-betas {value}: must be two numbers in [0, 1), like 0.9,0.95") from None
        return b1, b2


# Help for each settings field (tso_train.settings), in the order `--help` lists them. The
# options are built from the fields: each flag's default is the dataclass's.
FIT_HELP = {
    "model": "Policy to train: a transformers causal-LM directory (or hub id).",
    "out": "Run directory (part-K/, final, checkpoints/, metrics.jsonl).",
    "loss": "The preference loss.",
    "beta": "β: reward scale.",
    "gamma_w": "γ_w: dual-clip chosen-reward target.",
    "gamma_l": "γ_l: dual-clip rejected-reward target (−γ_l).",
    "ipo_tau": "τ of the IPO loss.",
    "cdpo_eps": "ε of the cDPO loss (label-flip rate).",
    "parts": "T: parts of the mini-batch-iterative schedule (reference reset before each).",
    "epochs": "Epochs per part.",
    "global_batch": "Pairs per optimiser step over all ranks.",
    "lr": "Peak AdamW learning rate (warm-up, cosine to 0, restarted every part).",
    "length_average": "Use length-averaged instead of summed sequence log-probs.",
    "score_user_turns": "Multi-turn pairs: also score the user turns inside chosen/rejected (TRL DPOTrainer's "
                        "convention); by default only assistant turns are scored.",
}
SFT_HELP = {
    "model": "Model to fine-tune (transformers causal-LM directory).",
    "out": "Run directory (final/, checkpoints/, metrics.jsonl).",
    "epochs": None,
    "global_batch": "Conversations per optimiser step over all ranks.",
    "lr": None,
}
ENGINE_HELP = {
    "micro_batch": "Pairs (fit) / conversations (sft) per forward per rank.",
    "weight_decay": "AdamW weight decay (matrices only, not biases and norms).",
    "adam_betas": "AdamW's β1,β2.",
    "adam_eps": "AdamW's ε.",
    "warmup_ratio": "Warm-up share of each part's steps (paper: unstated).",
    "grad_clip": "Gradient-norm clip (0: none).",
    "max_length": "Tokens per sequence (or 'none': no limit); longer ones keep the prompt's end and the answer's "
                  "start.",
    "zero": "DeepSpeed ZeRO stage.",
    "offload": "ZeRO CPU offload of the optimiser (and parameters at stage 3).",
    "bf16": "bfloat16 weights/activations (fp32 master weights in the optimiser).",
    "gradient_checkpointing": "Recompute activations in backward (less memory, the same result).",
    "packing": "Padding-free micro-batches (sequences packed end to end, attention per sequence) where the model's "
               "attention allows it (sdpa/eager); --no-packing pads instead. Default: packed on CPU, and on a GPU "
               "in bf16 where torch has varlen attention; padded otherwise (docs/train.md, docs/benchmarks.md).",
    "seed": "Seed of the shuffles (the parts, every epoch's order).",
    "deepspeed_config": "JSON deep-merged over the config built from the flags.",
    "save_every": "Resumable engine checkpoint every K optimiser steps.",
    "resume": "Continue OUT's run from its last checkpoint (exact part, step and sample).",
}
# click types where the default's own type is not the whole story
CLICK_TYPES = {
    "out": click.Path(file_okay=False),
    "loss": click.Choice(LOSS_NAMES),
    "zero": click.IntRange(0, 3),
    "max_length": MaxLength(),
    "adam_betas": AdamBetas(),
    "deepspeed_config": click.Path(exists=True, dir_okay=False),
}


def settings_options(config: type, help_by_field: dict[str, str | None]):
    """The click options of ``config``'s fields named in ``help_by_field`` (in its order): the
    flag is the field's name (tso_train.settings.flag), the default is the field's; a field
    without a default is a required option, a boolean one a flag."""
    field_defaults = defaults(config)

    def decorate(f):
        for name in reversed(help_by_field):
            kwargs: dict = {"help": help_by_field[name]}
            if name in CLICK_TYPES:
                kwargs["type"] = CLICK_TYPES[name]
            if name not in field_defaults:
                kwargs["required"] = True
            elif name == "packing":
                f = click.option("--packing/--no-packing", default=None, **kwargs)(f)
                continue
            elif field_defaults[name] is False:
                kwargs["is_flag"] = True
            else:
                default = field_defaults[name]
                if isinstance(default, tuple):  # as typed on the command line: B1,B2
                    default = ",".join(map(str, default))
                kwargs.update(default=default, show_default=default is not None)
            f = click.option(flag(name), **kwargs)(f)
        return f

    return decorate


FIT_EPILOG = """\b
Examples:
  tso-train fit snapshot.parquet --model ./policy --out runs/r1
  tso-train fit snapshot.parquet --model ./policy --out runs/r1 --loss dpo --parts 1
  deepspeed --num_gpus 8 $(which tso-train) fit snapshot.parquet --model ./policy --out runs/r1 --zero 3 --bf16
  torchrun --nproc_per_node 2 $(which tso-train) fit snapshot.parquet --model ./policy --out runs/r1
"""


@cli.command("fit", epilog=FIT_EPILOG)
@click.argument("snapshot", type=click.Path(dir_okay=False))
@settings_options(FitConfig, FIT_HELP | ENGINE_HELP)
def fit_cmd(**settings) -> None:
    """Mini-batch-iterative preference optimisation on a pair SNAPSHOT (Parquet).

    Shuffles the pairs with --seed, splits them into --parts equal parts and trains on one at a
    time; before each part the reference becomes the current policy and its log-probs for the
    part are computed once by the policy itself (no second model in memory). Defaults are the
    paper's (TSO, Appendix C.2).
    """
    _quiet_start()
    from tso_train.console import fit_summary
    from tso_train.loop import fit

    _run(fit, FitConfig(**settings, speed=SpeedSwitches.from_environment()), fit_summary, "fit")


def _run(train, cfg, summary_line, description: str) -> None:
    """Run `fit` or `sft` with a progress bar; rank 0 prints the one-line summary."""
    from tso_train.engine import rank
    from tso_train.progress import RichProgress

    progress = RichProgress(description)
    try:
        summary = train(cfg, progress=progress)
    finally:
        progress.stop()
    if rank() == 0:
        click.echo(summary_line(summary))
    if cfg.speed.freeze_gc_at_exit:
        # Python's final garbage collection walks every object torch, transformers and DeepSpeed
        # created and frees nothing a finished run needs: leave them to the OS
        gc.freeze()


SFT_EPILOG = """\b
Examples:
  tso-data export judge-sft --out judge_sft.parquet
  tso-train sft judge_sft.parquet --model ./judge --out runs/judge-sft
"""


@cli.command("sft", epilog=SFT_EPILOG)
@click.argument("data", type=click.Path(dir_okay=False))
@settings_options(SFTConfig, SFT_HELP | ENGINE_HELP)
def sft_cmd(**settings) -> None:
    """Supervised fine-tuning on conversations (DATA: Parquet or JSONL with a `messages` column of
    {role, content}); the loss is on assistant tokens only. Same engine as `fit` — used to correct
    the judge on the judge-SFT export."""
    _quiet_start()
    from tso_train.console import sft_summary
    from tso_train.sft import sft

    _run(sft, SFTConfig(**settings, speed=SpeedSwitches.from_environment()), sft_summary, "sft")


@cli.command("plot")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="Where to write the PNGs (default RUN_DIR/plots).")
def plot_cmd(run_dir: str, out: str | None) -> None:
    """PNGs of a run like the paper's Figures 3, 4 and 6: chosen/rejected rewards over steps and
    the gradient weight σ(−h), with the reference resets (part boundaries) marked."""
    quiet_third_party()
    from tso_train.plot import plot_run

    for path in plot_run(run_dir, out):
        click.echo(str(path))


def main() -> None:  # pragma: no cover
    cli()


if __name__ == "__main__":  # pragma: no cover
    cli()
