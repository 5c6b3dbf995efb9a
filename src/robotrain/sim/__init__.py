"""MuJoCo simulation of the SO-101 pick-and-place task, scripted expert, recorder.

Importing this package registers the gymnasium env `robotrain/SO101PickPlace-v0`
(see `robotrain.sim.env`); MuJoCo itself is imported only when an env is made.
"""

import gymnasium as _gym

ENV_ID = "robotrain/SO101PickPlace-v0"

if ENV_ID not in _gym.registry:
    _gym.register(id=ENV_ID, entry_point="robotrain.sim.env:SO101PickPlaceEnv", disable_env_checker=True)
