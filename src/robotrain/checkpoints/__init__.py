"""Checkpoints: LeRobot's layout written atomically and read back, exact resume
(`store`), weights re-expressed in other dataset statistics (`reexpress`) and
weight-averaged checkpoints (`averaging`)."""
