"""Generation backends and the resumable request loop."""
