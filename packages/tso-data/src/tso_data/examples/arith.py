"""A synthetic, program-checkable task: two-digit addition (subtraction optional).

The prompt asks ``What is 17 + 25?``; the reference ("human") answer is ``17 + 25 = 42``.
Everything is generated from a seed, so the train, held-out and SFT splits are the same
on every machine and share no problem.

:func:`score` is a verifier with partial credit on the 1–10 scale, usable as a function
judge: ``tso-data judge --judge fn:tso_data.examples.arith:score``. It reads the problem
from the prompt itself, so it needs no reference answer. Like an LLM judge with a rubric,
it has a taste beyond correctness: it prefers answers that restate the question in the
reference form. The SFT corpus the model matrix learns from answers in three styles in
equal shares (:data:`STYLES`), so every cell can write the judge's preferred answer but
picks it only about a third of the time, and its arithmetic is imperfect: the situation
preference data is made for (docs/design.md, "The CPU testbed").
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


def all_problems(ops: str = "+") -> list[Problem]:
    """Every problem of the task: a + b (and, with ``ops="+-"``, a - b with a >= b), operands 0..99.

    >>> len(all_problems()), len(all_problems("+-"))
    (10000, 15050)
    """
    problems: list[Problem] = []
    if "+" in ops:
        problems += [Problem(a, "+", b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)]
    if "-" in ops:
        problems += [Problem(a, "-", b) for a in range(MAX_OPERAND + 1) for b in range(a + 1)]
    return problems


def make_splits(
    n_train: int = 400, n_heldout: int = 100, n_sft: int = 3000, seed: int = 43, ops: str = "+"
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
    pool = all_problems(ops)
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


def grade(problem: Problem, text: str, truth: int | None = None) -> float:
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

    ``truth`` grades against another believed result (a judge with its own, possibly wrong,
    arithmetic: :func:`self_judge`):

    >>> grade(p, "17 + 25 = 32", truth=32), grade(p, "17 + 25 = 42", truth=32)
    (10.0, 5.7)
    """
    if truth is None:
        truth = problem.result
    echoed, value = read_answer(problem, text)
    if value is None:
        return SCALE_MIN
    if value == truth:
        credit = 1.0
    else:
        closeness = max(0.0, 1.0 - abs(value - truth) / 20)
        credit = 0.6 * _digit_credit(value, truth) + 0.3 * closeness
    exact = text.strip() == f"{problem.a} {problem.op} {problem.b} = {truth}"
    return round(SCALE_MIN + 2.0 * echoed + 6.0 * credit + 1.0 * exact, 4)



def _graded_problem(messages: Sequence[Mapping[str, str]], turns: Sequence[str]) -> tuple[str, Problem]:
    """The last user message and its problem; a prompt off the task or no answer is an error."""
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    problem = parse_question(question)
    if problem is None:
        raise ValueError(f"not an arithmetic-task prompt: {question[:80]!r}")
    if not turns:
        raise ValueError("no answer turn to score")
    return question, problem

def read_answer(problem: Problem, text: str) -> tuple[bool, int | None]:
    """(whether the answer restates the question's operands, the result it gives or None).

    >>> read_answer(Problem(17, "+", 25), "17 + 25 = 32"), read_answer(Problem(17, "+", 25), "The answer is 42.")
    ((True, 32), (False, 42))
    """
    text = text.strip()
    m = _EQUATION_RE.search(text)
    if m:
        return (int(m.group(1)), m.group(2), int(m.group(3))) == (problem.a, problem.op, problem.b), int(m.group(4))
    numbers = _INT_RE.findall(text)
    return False, (int(numbers[-1]) if numbers else None)


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
    question, problem = _graded_problem(messages, turns)
    return grade(problem, turns[0])


STYLES = ("equation", "number", "sentence")


def styled_answer(problem: Problem, style: str) -> str:
    """The answer in one of the SFT corpus's styles; only ``equation`` is the reference form.

    >>> p = Problem(17, "+", 25)
    >>> [styled_answer(p, s) for s in STYLES]
    ['17 + 25 = 42', '42', 'The answer is 42.']
    >>> [grade(p, styled_answer(p, s)) for s in STYLES]
    [10.0, 7.0, 7.0]
    """
    if style == "equation":
        return problem.answer
    if style == "number":
        return str(problem.result)
    if style == "sentence":
        return f"The answer is {problem.result}."
    raise ValueError(f"unknown style {style!r}; choose one of {', '.join(STYLES)}")


# Answer-style shares of the two SFT corpora: the plain one (every cell's version 1 and the small
# cells) and the flagship one (the large cells' later versions: post-training that already
# leans towards the judge's preferred form, as a family's largest model's usually does).
STYLE_SHARES = {"plain": (1.0, 1.0, 1.0), "flagship": (3.0, 1.0, 1.0)}


def write_task_files(out_dir: str | Path, splits: Mapping[str, Sequence[Problem]], seed: int = 43) -> dict[str, Path]:
    """Write ``prompts.jsonl`` (train + held-out prompts, with their split),
    ``answers.jsonl`` (the reference answers as human answers) and two SFT corpora over the
    same problems, ``sft.jsonl`` and ``sft-flagship.jsonl``, each answer in a seeded random
    style of :data:`STYLES` drawn with the corpus's :data:`STYLE_SHARES`. Returns the paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / f"{name}.jsonl" for name in ("prompts", "answers", "sft", "sft-flagship")}
    with paths["prompts"].open("w") as prompts, paths["answers"].open("w") as answers:
        for split in ("train", "heldout"):
            for p in splits[split]:
                row_id = f"{split}-{p.a}{p.op}{p.b}"
                prompts.write(json.dumps({"id": row_id, "messages": p.messages, "split": split,
                                          "source": "arith", "category": "add" if p.op == "+" else "sub"}) + "\n")
                answers.write(json.dumps({"id": row_id,
                                          "turns": [p.answer]}) + "\n")
    for corpus_name, path_name in (("plain", "sft"), ("flagship", "sft-flagship")):
        styles = random.Random(seed).choices(STYLES, weights=STYLE_SHARES[corpus_name], k=len(splits["sft"]))
        with paths[path_name].open("w") as sft:
            for p, style in zip(splits["sft"], styles):
                reply = {"role": "assistant", "content": styled_answer(p, style)}
                sft.write(json.dumps({"messages": p.messages + [reply]}) + "\n")
    return paths


def corpus(problems: Sequence[Problem]) -> list[str]:
    """Texts to train the shared tokenizer on: questions and answers."""
    return [t for p in problems for t in (p.question, *(styled_answer(p, s) for s in STYLES))]


# -- the base model as its own judge (the self-reward arm of the CPU example) ----------------

SELF_JUDGE_MODEL_ENV = "ARITH_SELF_JUDGE_MODEL"


def self_judge(
    messages: Sequence[Mapping[str, str]],
    turns: Sequence[str],
    reference: Sequence[str] | str | None = None,
) -> float:
    """A function judge that is a model of the matrix itself (Self-Rewarding LMs; paper Table 5).

    The model in ``$ARITH_SELF_JUDGE_MODEL`` (a transformers directory) answers the question
    greedily, and the answer under judgment is graded with :func:`grade`'s rubric against the
    result that model believes. The judge knows the rubric; its arithmetic is the model's own,
    flaws included. An answer of the judge with no number leaves it only the form to grade.

        ARITH_SELF_JUDGE_MODEL=WORK/models/arith-v2-s/final \\
            tso-data judge --judge fn:tso_data.examples.arith:self_judge --model arith-v2-s
    """
    question, problem = _graded_problem(messages, turns)
    believed = _believed_result(question)
    if believed is None:
        echoed, value = read_answer(problem, turns[0])
        return SCALE_MIN if value is None else SCALE_MIN + 2.0 * echoed
    return grade(problem, turns[0], truth=believed)


_JUDGE_CACHE: dict[str, object] = {}


def _believed_result(question: str) -> int | None:
    """The judge model's greedy answer to ``question``, read as a number (cached)."""
    import os

    path = os.environ.get(SELF_JUDGE_MODEL_ENV)
    if not path:
        raise ValueError(f"set ${SELF_JUDGE_MODEL_ENV} to the judging model's directory")
    key = f"{path}\0{question}"
    if key not in _JUDGE_CACHE:
        model, tokenizer = _judge_model(path)
        import torch

        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=24, do_sample=False)
        answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        numbers = _INT_RE.findall(answer)
        _JUDGE_CACHE[key] = int(numbers[-1]) if numbers else None
    return _JUDGE_CACHE[key]  # type: ignore[return-value]


def _judge_model(path: str):
    if path not in _JUDGE_CACHE:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _JUDGE_CACHE[path] = (AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
    return _JUDGE_CACHE[path]
