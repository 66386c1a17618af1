"""Write the arithmetic task's files, the shared tokenizer and the untrained matrix cells.

    python examples/tso_cpu/prepare.py --work WORK_DIR [--n-train 1000 --n-heldout 500 --n-sft 8000]

Creates, under WORK_DIR (idempotent: what exists is kept):

    task/prompts.jsonl   train + held-out prompts ("What is 17 + 25?"), with their split
    task/answers.jsonl   the reference answers ("17 + 25 = 42"): the human source
    task/sft.jsonl       conversations the model matrix is fine-tuned on (`tso-train sft`), answers
                         in three forms in equal shares
    task/sft-flagship.jsonl  the same problems, 3/5 of the answers in the reference form: the
                         large cell's version-2 post-training
    models/tokenizer/    one token per character (a byte-level BPE without merges), shared by every cell
    models/init-s/       a random small Llama (hidden 96, 2 layers) - the start of arith-v*-s
    models/init-l/       a random large Llama (hidden 128, 2 layers) - the start of arith-v*-l
    models/sizes.env     SIZE_S / SIZE_L: parameters in billions, for `tso-data models add`

The three splits are disjoint; the same seed gives the same files on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tso_data.examples.arith import corpus, make_splits, write_task_files

# A byte-level BPE with no merges: one token per character, so every digit is its own token
# (tiny models learn arithmetic far better that way) and the extra positions give them room.
TOKENIZER_VOCAB = 256 + 6  # the byte alphabet + tso_train.tiny's special tokens
SIZES = {"s": (96, 2), "l": (128, 2)}  # (hidden size, layers) per matrix size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, type=Path, help="working directory of the example")
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-heldout", type=int, default=500)
    ap.add_argument("--n-sft", type=int, default=8000)
    ap.add_argument("--seed", type=int, default=43)
    args = ap.parse_args()

    from tso_train.tiny import build_tiny_causal_lm, train_tokenizer

    splits = make_splits(args.n_train, args.n_heldout, args.n_sft, seed=args.seed)
    write_task_files(args.work / "task", splits, seed=args.seed)
    models = args.work / "models"
    tokenizer_dir = models / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        train_tokenizer(corpus(splits["sft"]), vocab_size=TOKENIZER_VOCAB).save_pretrained(tokenizer_dir)
    sizes = {}
    for size, (hidden, layers) in SIZES.items():
        out = models / f"init-{size}"
        if not (out / "config.json").is_file():
            build_tiny_causal_lm(out, hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2,
                                 max_position_embeddings=128, tokenizer_from=tokenizer_dir, seed=1)
        sizes[size] = _parameters_b(out)
    (models / "sizes.env").write_text("".join(f"SIZE_{k.upper()}={v:.2g}\n" for k, v in sizes.items()))
    print(f"[prepare] task files in {args.work / 'task'}; matrix sizes (B params): {sizes}")


def _parameters_b(model_dir: Path) -> float:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).num_parameters() / 1e9


if __name__ == "__main__":
    main()
