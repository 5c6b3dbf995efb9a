"""ACT policy (Zhao et al. 2023): `config.ACTConfig`, `model.ACTPolicy` (registered as "act")."""
