"""Evaluation: offline action error on held-out episodes, the same for every policy
(`offline`); closed-loop success in the simulation with its interval (`rollout`); the
statistics behind honest comparisons (`statistics`)."""
