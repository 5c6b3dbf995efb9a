"""MuJoCo simulation of the SO-101 pick-and-place task, scripted expert, recorder."""
