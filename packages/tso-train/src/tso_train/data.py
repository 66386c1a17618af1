"""Tokenise conversations with the model's chat template and batch them with little padding.

A conversation is rendered once with the chat template and tokenised once (so BPE merges are
exactly those the model sees at inference); assistant tokens are found from character spans
via the fast tokenizer's offset mapping. The label mask marks every token overlapping an
assistant message's rendered text (its content and the template's end-of-turn marker).

**Truncation policy** (``max_length``): a pair longer than ``max_length`` tokens keeps the
*end* of its prompt (the part nearest the answer) and the *start* of its answers. The prompt is
cut from the left to ``max(max_length // 2, max_length - longest answer)`` tokens (never
below what it needs), then each sequence is cut at the end to ``max_length``. The chosen and
rejected sequences keep the same prompt tokens. A pair left with no answer token is dropped
and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tso_train.errors import TSOTrainError
from tso_train.snapshot import Message, PreferencePair


@dataclass(frozen=True)
class EncodedSequence:
    input_ids: np.ndarray  # int64 [T]
    label_mask: np.ndarray  # bool [T]: token t is a trained (assistant) token

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class EncodedPair:
    index: int  # position in the snapshot
    chosen: EncodedSequence
    rejected: EncodedSequence

    @property
    def length(self) -> int:
        return max(len(self.chosen), len(self.rejected))

    @property
    def n_tokens(self) -> int:
        return len(self.chosen) + len(self.rejected)


def assistant_spans(tokenizer, messages: Sequence[Message]) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return the text and the character spans of assistant turns.

    Requires the template to render each conversation prefix as a prefix of the whole
    (true of the usual chat templates).
    """
    text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(list(messages[:i]), tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(list(messages[: i + 1]), tokenize=False)
        if not text.startswith(before) or not text.startswith(upto):
            raise TSOTrainError(
                "the model's chat template does not render conversation prefixes as prefixes; "
                "tso-train cannot locate the assistant tokens"
            )
        spans.append((len(before), len(upto)))
    return text, spans


def encode_conversation(tokenizer, messages: Sequence[Message], score_user_turns: bool = False) -> EncodedSequence:
    """Token ids of the rendered conversation and the mask of its assistant tokens.

    ``score_user_turns`` (TRL DPOTrainer's convention for multi-turn pairs): every token from the
    first assistant answer to the end is scored, the user turns between answers included.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TSOTrainError("tso-train needs a fast (Rust) tokenizer for offset mappings")
    text, spans = assistant_spans(tokenizer, messages)
    if score_user_turns and spans:
        spans = [(spans[0][0], len(text))]
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    mask = np.zeros(len(ids), dtype=bool)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        mask[t] = any(start < s_end and end > s_start for s_start, s_end in spans)
    return EncodedSequence(ids, mask)


def truncate_pair(chosen: EncodedSequence, rejected: EncodedSequence, max_length: int):
    """Apply the module's truncation policy; returns None when no answer token survives.

    >>> import numpy as np
    >>> s = EncodedSequence(np.arange(10), np.array([0]*6 + [1]*4, dtype=bool))
    >>> c, r = truncate_pair(s, s, 6)
    >>> c.input_ids.tolist(), c.label_mask.tolist()
    ([3, 4, 5, 6, 7, 8], [False, False, False, True, True, True])
    """
    if max(len(chosen), len(rejected)) <= max_length:
        return chosen, rejected
    prompt_len = min(int(np.argmax(chosen.label_mask)) if chosen.label_mask.any() else len(chosen),
                     int(np.argmax(rejected.label_mask)) if rejected.label_mask.any() else len(rejected))
    longest_answer = max(len(chosen), len(rejected)) - prompt_len
    keep_prompt = min(prompt_len, max(max_length // 2, max_length - longest_answer))
    out = []
    for seq in (chosen, rejected):
        start = prompt_len - keep_prompt
        ids = seq.input_ids[start : start + max_length]
        mask = seq.label_mask[start : start + max_length]
        if not mask.any():
            return None
        out.append(EncodedSequence(ids, mask))
    return out[0], out[1]


@dataclass(frozen=True)
class EncodedPairs:
    pairs: list[EncodedPair]
    n_truncated: int
    n_dropped: int


def encode_pairs(tokenizer, pairs: Sequence[PreferencePair], max_length: int | None,
                 score_user_turns: bool = False) -> EncodedPairs:
    out: list[EncodedPair] = []
    truncated = dropped = 0
    for i, p in enumerate(pairs):
        c = encode_conversation(tokenizer, p.prompt + p.chosen, score_user_turns)
        r = encode_conversation(tokenizer, p.prompt + p.rejected, score_user_turns)
        if max_length is not None and max(len(c), len(r)) > max_length:
            cut = truncate_pair(c, r, max_length)
            if cut is None:
                dropped += 1
                continue
            truncated += 1
            c, r = cut
        if not c.label_mask.any() or not r.label_mask.any():
            dropped += 1
            continue
        out.append(EncodedPair(i, c, r))
    return EncodedPairs(out, truncated, dropped)


def pad_sequences(seqs: Sequence[EncodedSequence], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: input_ids, attention_mask, label_mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.zeros((len(seqs), width), dtype=torch.bool)
    for row, s in enumerate(seqs):
        n = len(s)
        ids[row, :n] = torch.from_numpy(s.input_ids)
        attn[row, :n] = 1
        labels[row, :n] = torch.from_numpy(s.label_mask)
    return {"input_ids": ids, "attention_mask": attn, "label_mask": labels}


def collate_sequences(seqs: Sequence[EncodedSequence], pad_id: int, packed: bool = False) -> dict[str, torch.Tensor]:
    """One packed row (padding-free; see tso_train.packing) or a right-padded batch."""
    if packed:
        from tso_train.packing import pack_sequences

        return pack_sequences(seqs)
    return pad_sequences(seqs, pad_id)


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int, packed: bool = False) -> dict[str, torch.Tensor]:
    """Chosen sequences first, then rejected ones: both go through the model in ONE forward pass."""
    return collate_sequences([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, packed)


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-pad) tokens of a collated batch."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def split_global_batch(items: Sequence, micro_batch: int, world_size: int, rank: int, key,
                       balance_tokens: bool = False) -> list[list]:
    """This rank's micro-batches of a global batch: ``len(items) / micro_batch`` of them in all,
    dealt round-robin to the ranks (micro-batch j goes to rank j % world).

    The optimiser step's gradient is a sum over the global batch, so how it is cut does not
    change the update. Padded batches (``key`` = padded length): length-sorted chunks of
    ``micro_batch`` items, which cuts padding. Packed batches (``balance_tokens``, ``key`` =
    tokens): groups with nearly equal token totals (longest first, each to the lightest group),
    so the largest forward — which sets the peak activation memory — is as small as it can be;
    a group may then hold more or fewer than ``micro_batch`` items.

    >>> split_global_batch([5, 1, 4, 2, 3, 6], 2, 1, 0, key=lambda x: x)
    [[1, 2], [3, 4], [5, 6]]
    >>> split_global_batch([5, 1, 4, 2], 1, 2, 1, key=lambda x: x)
    [[2], [5]]
    >>> split_global_batch([9, 1, 1, 1, 4, 4], 2, 1, 0, key=lambda x: x, balance_tokens=True)
    [[9], [1, 1, 4], [1, 4]]
    """
    n_groups = len(items) // micro_batch
    if not balance_tokens:
        ordered = sorted(items, key=key)
        micro = [ordered[i : i + micro_batch] for i in range(0, len(ordered), micro_batch)]
    else:
        micro = [[] for _ in range(n_groups)]
        totals = [0] * n_groups
        for item in sorted(items, key=key, reverse=True):  # stable: ties keep their batch order
            lightest = min(range(n_groups), key=lambda g: (totals[g], len(micro[g]), g))
            micro[lightest].append(item)
            totals[lightest] += key(item)
        micro = [sorted(m, key=key) for m in micro]
    return micro[rank::world_size]


def pad_id_of(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    return 0
