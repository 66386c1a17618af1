"""`tso-train`: the trainer's command-line entry point."""

from __future__ import annotations

import gc
import sys

import click

from tso_train import __version__
from tso_train.console import quiet_third_party
from tso_train.errors import TSOTrainError


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
            command = f"tso-train {exc.ctx.info_name}" if exc.ctx is not None and exc.ctx.parent is not None else "tso-train"
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
@click.option("--hidden-size", type=click.IntRange(min=8), default=64, show_default=True, help="A multiple of 8 (4 heads).")
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


def _betas(value: str) -> tuple[float, float]:
    try:
        b1, b2 = (float(x) for x in value.split(","))
    except ValueError:
        raise TSOTrainError(f"--adam-betas {value}: must be two numbers in [0, 1), like 0.9,0.95") from None
    return b1, b2


def engine_options(f):
    """Options shared by `fit` and `sft` (defaults of `fit` = the paper's, Appendix C.2)."""
    options = [
        click.option("--micro-batch", default=4, show_default=True, help="Pairs (fit) / conversations (sft) per forward per rank."),
        click.option("--weight-decay", default=0.05, show_default=True),
        click.option("--adam-betas", default="0.9,0.95", show_default=True),
        click.option("--adam-eps", default=1e-8, show_default=True),
        click.option("--warmup-ratio", default=0.1, show_default=True, help="Warm-up share of each part's steps (paper: unstated)."),
        click.option("--grad-clip", default=1.0, show_default=True, help="Gradient-norm clip (0: none)."),
        click.option("--max-length", type=MaxLength(), default=1024, show_default=True,
                     help="Tokens per sequence (or 'none': no limit); longer ones keep the prompt's end and the answer's start."),
        click.option("--zero", type=click.IntRange(0, 3), default=0, show_default=True, help="DeepSpeed ZeRO stage."),
        click.option("--offload", is_flag=True, help="ZeRO CPU offload of the optimiser (and parameters at stage 3)."),
        click.option("--bf16", is_flag=True, help="bfloat16 weights/activations (fp32 master weights in the optimiser)."),
        click.option("--gradient-checkpointing", is_flag=True),
        click.option("--packing/--no-packing", default=None,
                     help="Padding-free micro-batches (sequences packed end to end, attention per sequence) where the "
                          "model's attention allows it (sdpa/eager); --no-packing pads instead. Default: packed on CPU, "
                          "padded on a GPU (packed measured ~8x slower on an H200, cause not yet known)."),
        click.option("--seed", default=43, show_default=True),
        click.option("--deepspeed-config", type=click.Path(exists=True, dir_okay=False), help="JSON deep-merged over the config built from the flags."),
        click.option("--save-every", default=50, show_default=True, help="Resumable engine checkpoint every K optimiser steps."),
        click.option("--resume", is_flag=True, help="Continue OUT's run from its last checkpoint (exact part, step and sample)."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


FIT_EPILOG = """\b
Examples:
  tso-train fit snapshot.parquet --model ./policy --out runs/r1
  tso-train fit snapshot.parquet --model ./policy --out runs/r1 --loss dpo --parts 1
  deepspeed --num_gpus 8 $(which tso-train) fit snapshot.parquet --model ./policy --out runs/r1 --zero 3 --bf16
  torchrun --nproc_per_node 2 $(which tso-train) fit snapshot.parquet --model ./policy --out runs/r1
"""


@cli.command("fit", epilog=FIT_EPILOG)
@click.argument("snapshot", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="Policy to train: a transformers causal-LM directory (or hub id).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory (part-K/, final, checkpoints/, metrics.jsonl).")
@click.option("--loss", type=click.Choice(["dual-clip", "dpo", "ipo", "cdpo"]), default="dual-clip", show_default=True)
@click.option("--beta", default=0.1, show_default=True, help="β: reward scale.")
@click.option("--gamma-w", default=20.0, show_default=True, help="γ_w: dual-clip chosen-reward target.")
@click.option("--gamma-l", default=10.0, show_default=True, help="γ_l: dual-clip rejected-reward target (−γ_l).")
@click.option("--ipo-tau", default=0.2, show_default=True, help="τ of the IPO loss.")
@click.option("--cdpo-eps", default=0.3, show_default=True, help="ε of the cDPO loss (label-flip rate).")
@click.option("--parts", default=3, show_default=True, help="T: parts of the mini-batch-iterative schedule (reference reset before each).")
@click.option("--epochs", default=2, show_default=True, help="Epochs per part.")
@click.option("--global-batch", default=256, show_default=True, help="Pairs per optimiser step over all ranks.")
@click.option("--lr", default=1e-6, show_default=True, help="Peak AdamW learning rate (warm-up, cosine to 0, restarted every part).")
@click.option("--length-average", is_flag=True, help="Use length-averaged instead of summed sequence log-probs.")
@click.option("--score-user-turns", is_flag=True,
              help="Multi-turn pairs: also score the user turns inside chosen/rejected (TRL DPOTrainer's convention); "
                   "by default only assistant turns are scored.")
@engine_options
def fit_cmd(snapshot: str, model: str, out: str, adam_betas: str, max_length: int | None, **kw) -> None:
    """Mini-batch-iterative preference optimisation on a pair SNAPSHOT (Parquet).

    Shuffles the pairs with --seed, splits them into --parts equal parts and trains on one at a
    time; before each part the reference becomes the current policy and its log-probs for the
    part are computed once by the policy itself (no second model in memory). Defaults are the
    paper's (TSO, Appendix C.2).
    """
    _quiet_start()
    from tso_train.console import fit_summary
    from tso_train.loop import FitConfig, fit

    cfg = FitConfig(snapshot=snapshot, model=model, out=out, adam_betas=_betas(adam_betas), max_length=max_length, **kw)
    _run(fit, cfg, fit_summary, "fit")


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
    # Python's final garbage collection walks every object torch, transformers and DeepSpeed
    # created (1-2 s on 2 cores) and frees nothing a finished run needs: leave them to the OS.
    gc.freeze()


SFT_EPILOG = """\b
Examples:
  tso-data export judge-sft --out judge_sft.parquet
  tso-train sft judge_sft.parquet --model ./judge --out runs/judge-sft
"""


@cli.command("sft", epilog=SFT_EPILOG)
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="Model to fine-tune (transformers causal-LM directory).")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--epochs", default=1, show_default=True)
@click.option("--global-batch", default=32, show_default=True, help="Conversations per optimiser step over all ranks.")
@click.option("--lr", default=1e-5, show_default=True)
@engine_options
def sft_cmd(data: str, model: str, out: str, adam_betas: str, max_length: int | None, **kw) -> None:
    """Supervised fine-tuning on conversations (DATA: Parquet or JSONL with a `messages` column of
    {role, content}); the loss is on assistant tokens only. Same engine as `fit` — used to correct
    the judge on the judge-SFT export."""
    _quiet_start()
    from tso_train.console import sft_summary
    from tso_train.sft import SFTConfig, sft

    cfg = SFTConfig(data=data, model=model, out=out, adam_betas=_betas(adam_betas), max_length=max_length, **kw)
    _run(sft, cfg, sft_summary, "sft")


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
