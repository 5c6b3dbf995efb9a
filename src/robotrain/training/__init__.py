"""Training: the one loop for every policy (`loop`) and its optimiser and lr schedule
(`optim`)."""
