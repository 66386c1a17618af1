"""A synthetic, program-checkable task: two-digit addition and subtraction.

The prompt asks ``What is 17 + 25?``; the reference ("human") answer is ``17 + 25 = 42``.
Everything is generated from a seed, so the train, held-out and SFT splits are the same
on every machine and share no problem.

:func:`score` is a verifier with partial credit on the 1–10 scale, usable as a function
judge: ``tso-data judge --judge fn:tso_data.examples.arith:score``. It reads the problem
from the prompt itself, so it needs no reference answer.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SCALE_MIN = 1.0
SCALE_MAX = 10.0
MAX_OPERAND = 99
SPLITS = ("train", "heldout", "sft")

_QUESTION_RE = re.compile(r"What is (\d+) ([+-]) (\d+)\?")
_EQUATION_RE = re.compile(r"(-?\d+)\s*([+-])\s*(-?\d+)\s*=\s*(-?\d+)")
_INT_RE = re.compile(r"-?\d+")


@dataclass(frozen=True, order=True)
class Problem:
    a: int
    op: str  # '+' or '-'
    b: int

    @property
    def result(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def question(self) -> str:
        """
        >>> Problem(17, "+", 25).question
        'What is 17 + 25?'
        """
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def answer(self) -> str:
        """The reference answer, in the one format the verifier gives full marks.

        >>> Problem(40, "-", 3).answer
        '40 - 3 = 37'
        """
        return f"{self.a} {self.op} {self.b} = {self.result}"

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.question}]


def all_problems() -> list[Problem]:
    """Every problem of the task: a + b, and a - b with a >= b, operands 0..99.

    >>> len(all_problems())
    15050
    """
    problems = [Problem(a, "+", b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    problems += [Problem(a, "-", b) for a in range(MAX_OPERAND + 1) for b in range(a + 1)]
    return problems


def make_splits(
    n_train: int = 400, n_heldout: int = 100, n_sft: int = 3000, seed: int = 43
) -> dict[str, list[Problem]]:
    """Disjoint, deterministic splits: ``train`` (pairs are built from it), ``heldout``
    (evaluation) and ``sft`` (the data the model matrix is trained on before round 1).

    >>> s = make_splits(5, 3, 10, seed=1)
    >>> [len(s[k]) for k in SPLITS]
    [5, 3, 10]
    >>> len(set(s["train"]) | set(s["heldout"]) | set(s["sft"]))
    18
    >>> make_splits(5, 3, 10, seed=1) == s
    True
    >>> make_splits(50, 3, 10, seed=1)["heldout"] == s["heldout"]
    True
    """
    pool = all_problems()
    total = n_train + n_heldout + n_sft
    if total > len(pool):
        raise ValueError(f"asked for {total} problems; the task has only {len(pool)}")
    random.Random(seed).shuffle(pool)
    # held-out first, then SFT, then train: growing the train split changes neither
    return {
        "heldout": pool[:n_heldout],
        "sft": pool[n_heldout : n_heldout + n_sft],
        "train": pool[n_heldout + n_sft : total],
    }


def parse_question(text: str) -> Problem | None:
    """The problem a prompt asks, or None.

    >>> parse_question("What is 7 - 2?")
    Problem(a=7, op='-', b=2)
    >>> parse_question("Tell me a story.") is None
    True
    """
    m = _QUESTION_RE.search(text)
    return Problem(int(m.group(1)), m.group(2), int(m.group(3))) if m else None


def _digit_credit(value: int, truth: int) -> float:
    """Share of digit positions (aligned from the right) that match; a sign or length
    mismatch costs positions.

    >>> _digit_credit(42, 42), _digit_credit(32, 42), _digit_credit(142, 42)
    (1.0, 0.5, 0.6666666666666666)
    """
    v, t = str(value), str(truth)
    width = max(len(v), len(t))
    v, t = v.rjust(width), t.rjust(width)
    return sum(x == y for x, y in zip(v, t)) / width


def grade(problem: Problem, text: str) -> float:
    """Score one answer text on the 1–10 scale.

    1 + 2 (the equation restates the question's operands) + 6 × result credit
    + 1 (exactly the reference text). The result credit is 1 for the right number;
    a wrong number earns partial credit (at most 0.9) from matching digits and closeness,
    so the mean over many answers moves smoothly as a model improves.

    >>> p = Problem(17, "+", 25)
    >>> grade(p, "17 + 25 = 42")
    10.0
    >>> grade(p, "The answer: 17 + 25 = 42.")
    9.0
    >>> grade(p, "17 + 25 = 32")
    5.7
    >>> grade(p, "42")
    7.0
    >>> grade(p, "I don't know")
    1.0
    """
    truth = problem.result
    text = text.strip()
    m = _EQUATION_RE.search(text)
    if m:
        echoed = (int(m.group(1)), m.group(2), int(m.group(3))) == (problem.a, problem.op, problem.b)
        value = int(m.group(4))
    else:
        numbers = _INT_RE.findall(text)
        if not numbers:
            return SCALE_MIN
        echoed, value = False, int(numbers[-1])
    if value == truth:
        credit = 1.0
    else:
        closeness = max(0.0, 1.0 - abs(value - truth) / 20)
        credit = 0.6 * _digit_credit(value, truth) + 0.3 * closeness
    exact = text == problem.answer
    return round(SCALE_MIN + 2.0 * echoed + 6.0 * credit + 1.0 * exact, 4)


def score(
    messages: Sequence[Mapping[str, str]],
    turns: Sequence[str],
    reference: Sequence[str] | str | None = None,
) -> float:
    """The function judge: score the first answer turn to the prompt's question.

    ``reference`` is accepted for the function-judge signature and ignored: the question
    determines the answer. A prompt that is not a task question is an error (the judge
    stores it as failed), never a number.

    >>> score([{"role": "user", "content": "What is 9 - 4?"}], ["9 - 4 = 5"])
    10.0
    """
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    problem = parse_question(question)
    if problem is None:
        raise ValueError(f"not an arithmetic-task prompt: {question[:80]!r}")
    if not turns:
        raise ValueError("no answer turn to score")
    return grade(problem, turns[0])


def write_task_files(out_dir: str | Path, splits: Mapping[str, Sequence[Problem]]) -> dict[str, Path]:
    """Write ``prompts.jsonl`` (train + held-out prompts, with their split),
    ``answers.jsonl`` (the reference answers as human answers) and ``sft.jsonl``
    (conversations for training the model matrix). Returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.jsonl" for name in ("prompts", "answers", "sft")}
    with paths["prompts"].open("w") as prompts, paths["answers"].open("w") as answers:
        for split in ("train", "heldout"):
            for p in splits[split]:
                row_id = f"{split}-{p.a}{p.op}{p.b}"
                prompts.write(json.dumps({"id": row_id, "messages": p.messages, "split": split,
                                          "source": "arith", "category": "add" if p.op == "+" else "sub"}) + "\n")
                answers.write(json.dumps({"id": row_id,
                                          "turns": [p.answer]}) + "\n")
    with paths["sft"].open("w") as sft:
        for p in splits["sft"]:
            sft.write(json.dumps({"messages": p.messages + [{"role": "assistant", "content": p.answer}]}) + "\n")
    return paths


def corpus(problems: Sequence[Problem]) -> list[str]:
    """Texts to train the shared tokenizer on: questions and answers."""
    return [t for p in problems for t in (p.question, p.answer)]
