"""Model zoos by name, torch-free: `model.name: torchvision/<arch>` or `timm/<name>`.

The planner checks such names at launch against a cached list of the library's models
(orchestrator/plan/preflight.py); the trainer builds them (trainer/models/zoo.py).
"""

from __future__ import annotations

# model.name prefix -> the distribution whose version keys the cached list of its names
ZOOS = {"torchvision": "torchvision", "timm": "timm"}


def split(name: str) -> tuple[str, str] | None:
    """("torchvision", "resnet18") for "torchvision/resnet18"; None for a built-in name."""
    zoo, sep, arch = name.partition("/")
    return (zoo, arch) if sep and zoo in ZOOS else None
