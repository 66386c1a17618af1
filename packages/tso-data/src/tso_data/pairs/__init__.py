"""`tso-data build`: round configuration, the pure pair-building core, snapshots."""
