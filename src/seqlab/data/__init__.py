"""Data: built-in synthetic tasks, the checked parallel-text reader, subwords and batching."""
