"""SmolVLA: SmolVLM2 backbone + flow-matching action expert (LeRobot-compatible weights)."""

from robotrain.policies.smolvla.config import SmolVLAConfig

__all__ = ["SmolVLAConfig", "SmolVLAPolicy"]


def __getattr__(name: str):  # keep `import robotrain.policies.smolvla` free of transformers
    if name == "SmolVLAPolicy":
        from robotrain.policies.smolvla.model import SmolVLAPolicy

        return SmolVLAPolicy
    raise AttributeError(name)
