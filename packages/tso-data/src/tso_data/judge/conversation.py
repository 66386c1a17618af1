"""How a (possibly multi-turn) conversation is shown to a judge.

A single-turn prompt shows the user's request and the reply. A multi-turn prompt (MT-Bench
has two user turns, answered turn by turn) is judged the way MT-Bench's multi-turn judge
does it: the judge sees the whole conversation up to the last user turn, with the
assistant's own earlier replies, and grades the final reply in that context.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _label(role: str) -> str:
    return {"system": "System instructions", "user": "User", "assistant": "Assistant"}.get(role, role.title())


def question_and_answer(
    messages: Sequence[Mapping[str, str]], turns: Sequence[str]
) -> tuple[str, str]:
    """``(question, answer)`` texts for the rubric's ``{question}`` and ``{answer}`` slots.

    User messages not already followed by an assistant message are the turns to answer;
    ``turns[i]`` answers the i-th of them.

    >>> question_and_answer([{"role": "user", "content": "Hi?"}], ["Hello!"])
    ('Hi?', 'Hello!')
    >>> q, a = question_and_answer(
    ...     [{"role": "user", "content": "Name a prime."}, {"role": "user", "content": "Another?"}],
    ...     ["2", "3"])
    >>> print(q)
    [User, turn 1]
    Name a prime.
    <BLANKLINE>
    [Assistant, turn 1]
    2
    <BLANKLINE>
    [User, turn 2]
    Another?
    >>> a
    '3'
    """
    if not turns:
        raise ValueError("no assistant turns to judge")
    answered = [
        i for i, m in enumerate(messages)
        if m["role"] == "user" and not (i + 1 < len(messages) and messages[i + 1]["role"] == "assistant")
    ]
    if len(answered) != len(turns):
        raise ValueError(f"{len(turns)} assistant turn(s) for {len(answered)} user turn(s) to answer")
    if len(messages) == 1:
        return messages[0]["content"], turns[0]
    if len(turns) == 1 and all(m["role"] != "assistant" for m in messages):
        # system + one user message: keep the request plain, the instructions as context
        parts = [f"[{_label(m['role'])}]\n{m['content']}" for m in messages]
        return "\n\n".join(parts), turns[0]
    parts: list[str] = []
    turn = 0
    for i, m in enumerate(messages):
        if m["role"] == "user":
            parts.append(f"[User, turn {answered.index(i) + 1 if i in answered else '-'}]\n{m['content']}")
            if i in answered and i != answered[-1]:
                parts.append(f"[Assistant, turn {turn + 1}]\n{turns[turn]}")
            if i in answered:
                turn += 1
        else:
            parts.append(f"[{_label(m['role'])}]\n{m['content']}")
    return "\n\n".join(parts), turns[-1]
