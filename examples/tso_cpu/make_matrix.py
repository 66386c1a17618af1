"""Write the arithmetic task's files and train the tiny model matrix on CPU.

    python examples/tso_cpu/make_matrix.py --work WORK_DIR

Writes ``WORK_DIR/task/{prompts,answers,sft}.jsonl`` and four models under
``WORK_DIR/models/`` sharing one tokenizer trained on the task corpus:

    arith-v1-s  hidden 32, few SFT steps     (old, small)
    arith-v1-l  hidden 64, few SFT steps     (old, large)
    arith-v2-s  hidden 32, more SFT steps    (new, small: the round-1 base)
    arith-v2-l  hidden 64, more SFT steps    (new, large: the positive model)

Idempotent: a model whose directory already holds ``model.safetensors`` is kept.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tso_data.examples.arith import corpus, make_splits, write_task_files


@dataclass(frozen=True)
class Cell:
    name: str
    version: int
    size_b: float  # nominal "billions" for the matrix axis: only the order matters
    hidden: int
    sft_steps: int


def matrix_cells(scale: float = 1.0) -> list[Cell]:
    """The 2 × 2 matrix. ``scale`` shrinks the SFT steps (the integration test uses it)."""
    few, more = max(1, int(250 * scale)), max(2, int(1000 * scale))
    return [
        Cell("arith-v1-s", 1, 1.0, 32, few),
        Cell("arith-v1-l", 1, 2.0, 64, few),
        Cell("arith-v2-s", 2, 1.0, 32, more),
        Cell("arith-v2-l", 2, 2.0, 64, more),
    ]


def supervised_finetune(model_dir: Path, sft_path: Path, steps: int, lr: float = 3e-3,
                        batch: int = 64, seed: int = 0) -> float:
    """Minimal SFT: loss on assistant tokens only, AdamW with a one-cycle schedule.
    Returns the last loss. (Stands in until `tso-train sft` lands.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = [json.loads(line)["messages"] for line in sft_path.read_text().splitlines()]
    data = []
    for messages in rows:
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(messages, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
        data.append((f_ids, [-100] * len(p_ids) + f_ids[len(p_ids):]))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(len(data), (batch,), generator=gen).tolist()
        width = max(len(data[i][0]) for i in idx)
        ids = torch.full((batch, width), tok.pad_token_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, i in enumerate(idx):
            f_ids, lab = data[i]
            ids[r, : len(f_ids)] = torch.tensor(f_ids)
            labels[r, : len(lab)] = torch.tensor(lab)
            mask[r, : len(f_ids)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    model.save_pretrained(model_dir)
    return loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, type=Path, help="working directory of the example")
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-heldout", type=int, default=100)
    ap.add_argument("--n-sft", type=int, default=3000)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply SFT steps (tests: 0.05)")
    ap.add_argument("--seed", type=int, default=43)
    args = ap.parse_args()

    import torch

    from tso_train.tiny import build_tiny_causal_lm, train_tokenizer

    torch.set_num_threads(1)  # the tiny models gain nothing from more; the cores are shared
    splits = make_splits(args.n_train, args.n_heldout, args.n_sft, seed=args.seed)
    paths = write_task_files(args.work / "task", splits)
    models = args.work / "models"
    tokenizer_dir = models / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        # vocab 300: digits stay (almost) single tokens, so arithmetic can generalise
        train_tokenizer(corpus(splits["sft"]), vocab_size=300).save_pretrained(tokenizer_dir)
    for cell in matrix_cells(args.scale):
        out = models / cell.name
        if (out / "model.safetensors").is_file():
            print(f"[matrix] {cell.name}: exists, kept")
            continue
        t0 = time.time()
        build_tiny_causal_lm(out, hidden_size=cell.hidden, num_layers=2, num_heads=4, num_kv_heads=2,
                             tokenizer_from=tokenizer_dir, seed=1)
        loss = supervised_finetune(out, paths["sft"], cell.sft_steps)
        print(f"[matrix] {cell.name}: hidden {cell.hidden}, {cell.sft_steps} SFT steps, "
              f"loss {loss:.3f}, {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
