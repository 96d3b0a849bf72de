"""A pruning method by name, wherever it was declared: built in (core/methods.py), in a spec read
by this process, or by an installed package (entry point group `turboprune.methods`,
core/method_decl.py), read on the first name the registry lacks.

Apart from both: the registry knows nothing of declarations, and a declaration registers into the
registry, so the lookup that needs both sits above them.
"""

from __future__ import annotations

from core.methods import METHODS, MethodInfo

_entry_points_read = False


def get_method(name: str) -> MethodInfo:
    """A method by name: built in, declared by a spec read in this process, or published by an
    installed package (entry point group `turboprune.methods`, read on the first unknown name)."""
    global _entry_points_read
    if name not in METHODS and not _entry_points_read:
        _entry_points_read = True
        from core.method_decl import register_entry_points  # pydantic (0.1 s): only for a name not built in

        register_entry_points()
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; known: {', '.join(METHODS)}") from None
