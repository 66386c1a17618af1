"""Bad input to `tso-data ingest`: each case is one clear line naming file, line and field
(or the flag), exit 2, and the catalog exactly as it was (tests/bad_input/catalog_harness.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalog_harness import Case, Ctx, base_catalog, case, run_case  # noqa: E402

__all__ = ["base_catalog"]  # the session fixture, used by name


def jl(*rows: dict[str, object]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


P = "ingest prompts {tmp}/p.jsonl --set source=demo"
KNOWN = "Eli fills 2 boxes with 13 marbles each. How many marbles is that in total?"  # demo-0000, train


def _parquet(name: str, table: pa.Table):
    def setup(ctx: Ctx) -> None:
        pq.write_table(table, ctx.tmp / name)
    return setup


PROMPTS = [
    case("jsonl-malformed-line", P, "p.jsonl:2: malformed JSON", files={"p.jsonl": '{"prompt": "a"}\n{"prompt": \n'}),
    case("jsonl-not-an-object", P, "p.jsonl:1: expected a JSON object per line, got a list", files={"p.jsonl": '["a"]\n'}),
    case("jsonl-200k-deep", P, "p.jsonl:1: JSON nested too deeply",
         files={"p.jsonl": '{"prompt": ' + "[" * 200_000 + "]" * 200_000 + "}\n"}),
    case("jsonl-lone-surrogate", P, "p.jsonl:2: field 'prompt': text holds a lone surrogate",
         files={"p.jsonl": '{"prompt": "fine"}\n{"prompt": "bad \\ud800 text"}\n'}),
    case("jsonl-lone-surrogate-in-messages", "ingest prompts {tmp}/p.jsonl", "p.jsonl:1: field 'messages'", "surrogate",
         files={"p.jsonl": '{"messages": [{"role": "user", "content": "x \\udfff"}]}\n'}),
    case("jsonl-invalid-utf8", P, "p.jsonl:2: not valid UTF-8", files={"p.jsonl": b'{"prompt": "a"}\n{"prompt": "\xff"}\n'}),
    case("jsonl-empty-file", P, "p.jsonl: no rows", files={"p.jsonl": "\n\n"}),
    case("messages-not-a-list", "ingest prompts {tmp}/p.jsonl", "p.jsonl:1: field 'messages': expected a list",
         files={"p.jsonl": jl({"messages": "hello"})}),
    case("message-without-content", "ingest prompts {tmp}/p.jsonl", "p.jsonl:1: field 'messages'", "no string 'content'",
         files={"p.jsonl": jl({"messages": [{"role": "user"}]})}),
    case("empty-prompt", P, "p.jsonl:2: field 'prompt': empty prompt", files={"p.jsonl": jl({"prompt": "ok"}, {"prompt": "  "})}),
    case("last-message-assistant", "ingest prompts {tmp}/p.jsonl", "p.jsonl:1:", "last message must be from the user",
         files={"p.jsonl": jl({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})}),
    case("unknown-role", "ingest prompts {tmp}/p.jsonl", "p.jsonl:1:", "role is not",
         files={"p.jsonl": jl({"messages": [{"role": "robot", "content": "q"}]})}),
    case("unknown-split-value", P, "p.jsonl:1: field 'split': 'test' is not one of", files={"p.jsonl": jl({"prompt": "q", "split": "test"})}),
    case("split-conflict-with-catalog", P, "p.jsonl:1: field 'split': conflict", "'train'", "not 'heldout'",
         files={"p.jsonl": jl({"id": "demo-0000", "prompt": KNOWN, "split": "heldout"})}),
    case("split-conflict-inside-file", P, "p.jsonl:2: field 'split': conflict", "line/row 1",
         files={"p.jsonl": jl({"prompt": "new q", "split": "train"}, {"prompt": "new q", "split": "heldout"})}),
    case("external-id-reused-by-new-prompt", P, "p.jsonl:1: field 'id': external id 'demo-0000'", "already names the catalog's prompt",
         files={"p.jsonl": jl({"id": "demo-0000", "prompt": "A different question?"})}),
    case("external-id-twice-in-file", P, "p.jsonl:2: field 'id': external id 'x1'", "line/row 1",
         files={"p.jsonl": jl({"id": "x1", "prompt": "one"}, {"id": "x1", "prompt": "two"})}),
    case("no-prompt-column", P, "p.jsonl:1: field 'prompt': missing", files={"p.jsonl": jl({"text": "q"})}),
    case("map-to-missing-column", P + " --map prompt=nope", "--map prompt=nope: no column 'nope'", files={"p.jsonl": jl({"prompt": "q"})}),
    case("set-unknown-field", P + " --set bogus=1", "'bogus' is not a field of prompts", files={"p.jsonl": jl({"prompt": "q"})}),
    case("map-without-equals", P + " --map oops", "--map 'oops': expected FIELD=VALUE", files={"p.jsonl": jl({"prompt": "q"})}),
    case("unknown-extension", "ingest prompts {tmp}/p.txt", "p.txt: unknown format .txt", files={"p.txt": "q\n"}),
    case("missing-file", "ingest prompts {tmp}/nope.jsonl", "nope.jsonl: file not found"),
    case("prompt-is-a-number", P, "p.jsonl:1: field 'prompt': expected a string, got a number", files={"p.jsonl": jl({"prompt": 7})}),
    case("unknown-kind", "ingest nonsense {tmp}/p.jsonl", "'nonsense' is not one of", files={"p.jsonl": jl({"prompt": "q"})}),
]

CSV = "ingest prompts {tmp}/p.csv --set source=demo"
CSVS = [
    case("csv-unterminated-quote", CSV, "p.csv:3: malformed CSV", "never closed",
         files={"p.csv": 'id,prompt\n1,fine\n2,"hello\n3,swallowed\n'}),
    case("csv-extra-field", CSV, "p.csv:3: malformed CSV: 3 field(s), the header has 2", files={"p.csv": "id,prompt\n1,a\n2,b,c\n"}),
    case("csv-short-row", CSV, "p.csv:2: malformed CSV: 2 field(s), the header has 3", files={"p.csv": "id,prompt,split\n1,a\n"}),
    case("csv-duplicate-header", CSV, "p.csv:1: field 'id': duplicate column name (columns 1 and 3)", files={"p.csv": "id,prompt,id\n1,a,2\n"}),
    case("csv-empty-header-name", CSV, "p.csv:1: malformed CSV header: column 2 has no name", files={"p.csv": "id,,prompt\n1,x,a\n"}),
    case("csv-quote-in-the-middle", CSV, "p.csv:2: malformed CSV", files={"p.csv": 'id,prompt\n1,"a"b\n'}),
    case("csv-header-only", CSV, "p.csv: no rows", files={"p.csv": "id,prompt\n"}),
    case("csv-invalid-utf8", CSV, "p.csv:2: not valid UTF-8", files={"p.csv": b"id,prompt\n1,\xfe\n"}),
]

PARQUETS = [
    case("parquet-garbage", "ingest prompts {tmp}/p.parquet", "p.parquet: not a readable Parquet file", files={"p.parquet": b"PAR1 nope"}),
    case("parquet-prompt-column-wrong-type", "ingest prompts {tmp}/p.parquet", "p.parquet:1: field 'prompt': expected a string, got column type BIGINT",
         setup=_parquet("p.parquet", pa.table({"prompt": [1, 2]}))),
    case("parquet-response-sample-index-text", "ingest responses {tmp}/r.parquet --prompt-source demo",
         "r.parquet:1: field 'sample_index': expected an integer",
         setup=_parquet("r.parquet", pa.table({"prompt_id": ["demo-0000"], "model": ["acme-v1-1b"], "response": ["x"], "sample_index": ["one"]}))),
]

A = "ingest answers {tmp}/a.jsonl --prompt-source demo"
ANSWERS = [
    case("answer-unknown-prompt", A, "a.jsonl:1: field 'prompt_id': no prompt of source 'demo'", "'nope'",
         files={"a.jsonl": jl({"prompt_id": "nope", "answer": "x"})}),
    case("answer-source-is-a-model", A + " --set source=acme-v1-1b", "a.jsonl:1: field 'source': 'acme-v1-1b' is not a human source",
         files={"a.jsonl": jl({"prompt_id": "demo-0001", "answer": "x"})}),
    case("answer-too-many-turns", A, "a.jsonl:1: field 'answer': 2 turn(s) given, the prompt has 1",
         files={"a.jsonl": jl({"prompt_id": "demo-0001", "answer": ["x", "y"]})}),
    case("answer-empty-text", A, "a.jsonl:2: field 'answer': empty text",
         files={"a.jsonl": jl({"prompt_id": "demo-0001", "answer": "ok"}, {"prompt_id": "demo-0002", "answer": " "})}),
    case("answer-null-turn", A, "a.jsonl:1: field 'answer': missing value", files={"a.jsonl": jl({"prompt_id": "demo-0001", "answer": None})}),
    case("answer-prompt-source-unknown", "ingest answers {tmp}/a.jsonl --prompt-source nosuch", "no prompt of source 'nosuch'",
         files={"a.jsonl": jl({"prompt_id": "demo-0001", "answer": "x"})}),
]

R = "ingest responses {tmp}/r.jsonl --prompt-source demo"


def resp(**kw: object) -> dict[str, object]:
    return {"prompt_id": "demo-0001", "model": "acme-v1-1b", "response": "x", **kw}


RESPONSES = [
    case("response-unknown-model", R, "r.jsonl:1: field 'model': unknown model 'nobody'", files={"r.jsonl": jl(resp(model="nobody"))}),
    case("response-model-is-human", R, "r.jsonl:1: field 'model': 'human' is a human source", files={"r.jsonl": jl(resp(model="human"))}),
    case("response-sample-index-2-pow-70", R, "r.jsonl:1: field 'sample_index': integer 1180591620717411303424 out of range",
         files={"r.jsonl": jl(resp(sample_index=2**70))}),
    case("response-sample-index-2-pow-40", R, "r.jsonl:1: field 'sample_index': 1099511627776 is not an index",
         files={"r.jsonl": jl(resp(sample_index=2**40))}),
    case("response-sample-index-negative", R, "r.jsonl:1: field 'sample_index': -1 is not an index", files={"r.jsonl": jl(resp(sample_index=-1))}),
    case("response-sample-index-fraction", R, "r.jsonl:1: field 'sample_index': expected an integer", files={"r.jsonl": jl(resp(sample_index=1.5))}),
    case("response-conflicts-with-catalog", R, "r.jsonl:1: field 'response_id'", "already holds", "different content",
         files={"r.jsonl": jl({"prompt_id": "demo-0000", "model": "acme-v1-1b", "response": "changed", "sample_index": 0})}),
    case("response-twice-in-file", R, "r.jsonl:2: field 'response_id'", "as line/row 1 but different content",
         files={"r.jsonl": jl(resp(sample_index=9), resp(sample_index=9, response="other"))}),
    case("response-no-turns", R, "r.jsonl:1: field 'response': no turns", files={"r.jsonl": jl(resp(response=[]))}),
    case("response-turns-not-strings", R, "r.jsonl:1: field 'response': expected a list of strings", files={"r.jsonl": jl(resp(response=[1]))}),
    case("model-flag-on-judgments", "ingest judgments {tmp}/r.jsonl --model acme-v1-1b", "--model applies to responses only",
         files={"r.jsonl": jl(resp())}),
]

J = "ingest judgments {tmp}/j.jsonl --prompt-source demo --set judge=j2"


def jud(**kw: object) -> dict[str, object]:
    return {"prompt_id": "demo-0001", "model": "acme-v1-1b", "score": 5, **kw}


JUDGMENTS = [
    case("judgment-without-judge", "ingest judgments {tmp}/j.jsonl --prompt-source demo", "j.jsonl:1: field 'judge': missing",
         files={"j.jsonl": jl(jud())}),
    case("judgment-score-text", J, "j.jsonl:1: field 'score': expected a number, got a string", files={"j.jsonl": jl(jud(score="high"))}),
    case("judgment-score-nan", J, "j.jsonl:1: field 'score': expected a finite number", files={"j.jsonl": '{"prompt_id": "demo-0001", "model": "acme-v1-1b", "score": NaN}\n'}),
    case("judgment-scale-reversed", J + " --scale 10-1", "--scale '10-1': MIN must be below MAX", files={"j.jsonl": jl(jud())}),
    case("judgment-scale-nan", J + " --scale nan-nan", "--scale 'nan-nan': MIN and MAX must be finite", files={"j.jsonl": jl(jud())}),
    case("judgment-scale-inf", J + " --scale 1-inf", "--scale '1-inf'", files={"j.jsonl": jl(jud())}),
    case("judgment-scale-words", J + " --scale low-high", "--scale 'low-high': expected MIN-MAX", files={"j.jsonl": jl(jud())}),
    case("judgment-unknown-target", J, "j.jsonl:1: field 'target_id': no response or answer with id 'ffff'",
         files={"j.jsonl": jl({"target_id": "ffff", "score": 5})}),
    case("judgment-nothing-to-judge", J, "j.jsonl:1: field 'model': nothing from 'acme-v1-1b' to judge", "sample_index 7",
         files={"j.jsonl": jl(jud(sample_index=7))}),
    case("judgment-same-key-different-score", J, "j.jsonl:2: field 'judgment_id'", "as line/row 1 but different content",
         files={"j.jsonl": jl(jud(), jud(score=6))}),
]

F = "ingest feedback {tmp}/f.jsonl --prompt-source demo --set annotator=human:ana"


def fb(**kw: object) -> dict[str, object]:
    return {"prompt_id": "demo-0001", "model": "acme-v1-1b", "score": 5, **kw}


FEEDBACK = [
    case("feedback-score-above-rubric-scale", F, "f.jsonl:2: field 'score': 11 is outside the scale 1-10 of rubric 'overall'",
         files={"f.jsonl": jl(fb(), fb(score=11, sample_index=1))}),
    case("feedback-score-below-rubric-scale", F, "f.jsonl:1: field 'score': 0 is outside the scale 1-10", files={"f.jsonl": jl(fb(score=0))}),
    case("feedback-custom-rubric-uses-scale-flag", F + " --set rubric=custom --scale 1-5", "f.jsonl:1: field 'score': 7 is outside the scale 1-5 of rubric 'custom'",
         files={"f.jsonl": jl(fb(score=7))}),
    case("feedback-without-annotator", "ingest feedback {tmp}/f.jsonl --prompt-source demo", "f.jsonl:1: field 'annotator': missing",
         files={"f.jsonl": jl(fb())}),
    case("feedback-without-score", F, "f.jsonl:1: field 'score': missing value", files={"f.jsonl": jl(fb(score=None))}),
    case("feedback-bad-split", F, "f.jsonl:1: field 'split': 'dev' is not one of", files={"f.jsonl": jl(fb(split="dev"))}),
]

CASES: list[Case] = PROMPTS + CSVS + PARQUETS + ANSWERS + RESPONSES + JUDGMENTS + FEEDBACK


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_ingest_bad_input(c: Case, base_catalog: Path, tmp_path: Path) -> None:
    run_case(c, base_catalog, tmp_path)
