"""Policy registry: a plain dict from name to "module:Class", imported on demand so that
`import robotrain` never pulls in transformers."""

from __future__ import annotations

import importlib

from robotrain.errors import ConfigError
from robotrain.policies.base import Policy, PolicyConfig, PolicyFeatures

POLICY_CLASSES: dict[str, str] = {
    "act": "robotrain.policies.act.model:ACTPolicy",
    "smolvla": "robotrain.policies.smolvla.model:SmolVLAPolicy",
}


def get_policy_class(name: str) -> type[Policy]:
    """The policy class registered under `name` ("act", "smolvla")."""
    target = POLICY_CLASSES.get(name)
    if target is None:
        raise ConfigError(f"unknown policy {name!r}; choose one of {sorted(POLICY_CLASSES)}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["POLICY_CLASSES", "Policy", "PolicyConfig", "PolicyFeatures", "get_policy_class"]
