"""robotrain: train, evaluate and compare robot imitation-learning policies on LeRobot datasets."""

from robotrain.errors import RobotrainError

__version__ = "0.1.0"
__all__ = ["RobotrainError", "__version__"]
