"""How settings are given: the dataclass <-> JSON <-> command-line bridge (`flags`), the
training config (`train`) and named presets (`presets`). Policy configs live with their
policy (`policies/<name>/config.py`)."""
