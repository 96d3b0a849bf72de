"""turboprune's core: what the planner and the trainer must agree on, free of torch and SQLAlchemy.

Level ids and the level DAG (levels), the output-folder layout (layout), trainer config
composition and its schema (config, schema, conf/), the pruning methods by name (methods) and
layer-wise densities (density), and one atomic file write (atomic). Everything above imports
this; this imports nothing of the project above it.
"""

__version__ = "0.1.0"  # the source tree's version (pyproject.toml reads it from here)


def version() -> str:
    """The installed distribution's version, else the source tree's."""
    from importlib.metadata import PackageNotFoundError  # importlib.metadata (a few ms): only for a version
    from importlib.metadata import version as dist_version  # the same

    try:
        return dist_version("turboprune")
    except PackageNotFoundError:
        return __version__
