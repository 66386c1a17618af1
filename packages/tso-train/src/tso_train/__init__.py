"""tso-train: mini-batch-iterative DPO with the dual-clip reward loss on DeepSpeed.

Reads pair snapshots (docs/design.md, 4. The snapshot contract); never imports tso_data.
"""

__version__ = "0.1.0"
