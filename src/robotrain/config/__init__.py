"""How settings are given: the dataclass <-> JSON <-> command-line bridge (`flags`). The
training config lives with the loop (`training/config.py`), each policy's with its policy
(`policies/<name>/config.py`)."""
