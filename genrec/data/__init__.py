"""Stage 1 (`prepare`): source files -> canonical dataset folder (items, sequences, manifest)."""
