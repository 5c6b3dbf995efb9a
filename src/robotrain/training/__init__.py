"""Training: the one loop for every policy (`loop`), its config and how flags resolve it
(`config`), named presets (`presets`), and the optimiser and lr schedule (`optim`)."""
