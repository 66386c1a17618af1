"""tso-data: the TSO preference-data catalog (model matrix, generation, judging, pair snapshots)."""

__version__ = "0.1.0"
