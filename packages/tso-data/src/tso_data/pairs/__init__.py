"""Pair building, the work of `tso-data build` (docs/design.md, "2. Architecture").

Named after the method's concepts: :mod:`.pools` (the positive and negative source rules and
weights), :mod:`.tau` (τ and the split of the base model's answers), :mod:`.sampling` (the
counter-based randomness and the one weighted sampler), :mod:`.matrix_pairs` and
:mod:`.base_pairs` (the two kinds of pair), :mod:`.selection` (slots and the pairs taken per
kind), :mod:`.core` (the pure function from catalog frames to pairs) and :mod:`.reference`
(the same, per prompt, written for reading). Around the core: :mod:`.config` (round.toml),
:mod:`.candidates` (the answers a round may use), :mod:`.conversations` and :mod:`.snapshot`
(the snapshot file) and :mod:`.run` (reading the catalog, recording the snapshot).
"""
