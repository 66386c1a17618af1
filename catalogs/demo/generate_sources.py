"""Write the demo catalog's source files (catalogs/demo/source/*.jsonl).

Everything here is written by the project itself: ~200 program-checkable prompts
(arithmetic word problems, string and list manipulation), correct human answers from the
generator, answers (4 samples each) of a fictional 'acme' model family (3 versions x 2 sizes) whose
mistakes grow with older versions and smaller sizes, and scores of a deterministic
checker judge. Deterministic: the same seed writes byte-identical files.

    python catalogs/demo/generate_sources.py        # then: bash catalogs/demo/rebuild.sh
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

SEED = 43
N_PROMPTS = 200
HELDOUT_EVERY = 10  # every 10th prompt is held out for evaluation
SAMPLES = 4  # answers per model and prompt (sample_index 0..3): base pairs need several
OUT = Path(__file__).resolve().parent / "source"

# name -> (version, size_b, mistake rate): older and smaller make more mistakes.
MODELS = {
    "acme-v1-1b": (1, 1.0, 0.60),
    "acme-v1-7b": (1, 7.0, 0.45),
    "acme-v2-1b": (2, 1.0, 0.40),
    "acme-v2-7b": (2, 7.0, 0.25),
    "acme-v3-1b": (3, 1.0, 0.25),
    "acme-v3-7b": (3, 7.0, 0.08),
}
NAMES = ["Ada", "Bo", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Juno"]
ITEMS = ["apples", "pencils", "marbles", "stickers", "books", "shells", "coins", "cards"]
WORDS = ["lantern", "harbor", "pixel", "meadow", "quartz", "violet", "tundra", "ember", "cobalt", "saffron"]

Task = tuple[str, str, str, str]  # (category, prompt, answer, explanation)


def arithmetic(rng: random.Random) -> Task:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c = rng.randint(5, 60), rng.randint(2, 30), rng.randint(1, 9)
    kind = rng.choice(["add-sub", "mul"])
    if kind == "add-sub":
        answer = a + b - c
        prompt = f"{name} has {a} {item}, buys {b} more and gives {c} away. How many {item} does {name} have now?"
        why = f"{a} + {b} = {a + b}, and {a + b} - {c} = {answer}."
    else:
        answer = b * c
        prompt = f"{name} fills {c} boxes with {b} {item} each. How many {item} is that in total?"
        why = f"{c} boxes x {b} {item} = {answer}."
    return "arithmetic", prompt, str(answer), why


def reverse_word(rng: random.Random) -> Task:
    word = rng.choice(WORDS) + rng.choice(WORDS)
    return ("strings", f"Write the word '{word}' backwards.", word[::-1],
            f"Reading '{word}' from the last letter to the first.")


def count_letter(rng: random.Random) -> Task:
    word = rng.choice(WORDS) + rng.choice(WORDS)
    letter = rng.choice(sorted(set(word)))
    n = word.count(letter)
    return ("strings", f"How many times does the letter '{letter}' occur in '{word}'?", str(n),
            f"Scanning '{word}' finds '{letter}' {n} time(s).")


def sort_numbers(rng: random.Random) -> Task:
    nums = rng.sample(range(1, 100), rng.randint(4, 7))
    answer = ", ".join(map(str, sorted(nums)))
    return ("lists", f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}.", answer,
            "Comparing the numbers pairwise gives the order.")


def max_number(rng: random.Random) -> Task:
    nums = rng.sample(range(1, 500), rng.randint(4, 8))
    return ("lists", f"Which is the largest of: {', '.join(map(str, nums))}?", str(max(nums)),
            f"{max(nums)} is larger than every other number in the list.")


TASKS: list[Callable[[random.Random], Task]] = [arithmetic, arithmetic, reverse_word, count_letter, sort_numbers,
                                                max_number]


def corrupt(answer: str, rng: random.Random) -> str:
    """A plausible wrong answer: off-by-a-little numbers, swapped letters, reordered lists."""
    if answer.lstrip("-").isdigit():
        return str(int(answer) + rng.choice([-2, -1, 1, 3]))
    if ", " in answer:
        parts = answer.split(", ")
        i = rng.randrange(len(parts) - 1)
        parts[i], parts[i + 1] = parts[i + 1], parts[i]
        return ", ".join(parts)
    chars = list(answer)
    i = rng.randrange(len(chars) - 1)
    chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars) if "".join(chars) != answer else answer + answer[-1]


def model_answer(model: str, size_b: float, mistake_rate: float, answer: str, why: str, key: str) -> tuple[str, bool]:
    rng = random.Random(f"{SEED}:{model}:{key}")
    correct = rng.random() >= mistake_rate
    final = answer if correct else corrupt(answer, rng)
    if size_b >= 7:
        text = f"Let me work it out. {why if correct else 'Working it through step by step.'}\nAnswer: {final}"
    else:
        text = f"Answer: {final}"
    return text, correct


def judge_score(text: str, answer: str, key: str) -> float:
    """The demo judge: checks the final answer, rewards a shown explanation; 1-10."""
    final = text.rsplit("Answer:", 1)[-1].strip()
    jitter = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 3  # 0..2, deterministic
    if final == answer:
        return float(min(10, 7 + jitter + (1 if "\n" in text else 0)))
    return float(2 + jitter)


def judgment(pid: str, model: str, text: str, answer: str) -> dict[str, object]:
    score = judge_score(text, answer, f"{pid}:{model}:{text}")
    verdict = "correct" if score >= 7 else "wrong"
    return {"prompt_id": pid, "model": model, "score": score,
            "review": f"The final answer is {verdict}.\nScore: {score:g}"}


def main() -> None:
    rng = random.Random(SEED)
    prompts, answers, responses, judgments = [], [], [], []
    seen: set[str] = set()
    while len(prompts) < N_PROMPTS:
        category, text, answer, why = rng.choice(TASKS)(rng)
        if text in seen:
            continue
        seen.add(text)
        pid = f"demo-{len(prompts):04d}"
        split = "heldout" if len(prompts) % HELDOUT_EVERY == HELDOUT_EVERY - 1 else "train"
        prompts.append({"id": pid, "prompt": text, "category": category, "split": split, "expected": answer})
        human = f"{why}\nAnswer: {answer}"
        answers.append({"prompt_id": pid, "answer": human, "author": "demo-generator"})
        judgments.append(judgment(pid, "human", human, answer))
        for model, (_version, size_b, rate) in MODELS.items():
            for sample in range(SAMPLES):
                key = pid if sample == 0 else f"{pid}#{sample}"
                out, _ok = model_answer(model, size_b, rate, answer, why, key)
                responses.append({"prompt_id": pid, "model": model, "sample_index": sample, "response": out})
                judgments.append(judgment(pid, model, out, answer) | {"sample_index": sample})
    models = [
        {"name": m, "family": "acme", "version": str(v), "size_b": s,
         "note": f"fictional demo model, mistake rate {r:.0%}"}
        for m, (v, s, r) in MODELS.items()
    ]
    OUT.mkdir(parents=True, exist_ok=True)
    for name, rows in [("models", models), ("prompts", prompts), ("answers", answers),
                       ("responses", responses), ("judgments", judgments)]:
        with open(OUT / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"wrote {len(prompts)} prompts, {len(answers)} answers, {len(responses)} responses, "
          f"{len(judgments)} judgments to {OUT}")


if __name__ == "__main__":
    main()
