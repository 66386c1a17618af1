"""LLM-as-judge: rubrics, score parsing, judge runs, scores/τ, evaluation correction."""
