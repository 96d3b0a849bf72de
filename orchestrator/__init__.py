"""turboprune's orchestrator: spec, plan, store, executors, and the `tp-sweep` command."""

__version__ = "0.1.0"  # the source tree's version (pyproject.toml reads it from here)


def version() -> str:
    """The installed distribution's version, else the source tree's."""
    from importlib.metadata import PackageNotFoundError, version as dist_version

    try:
        return dist_version("turboprune")
    except PackageNotFoundError:
        return __version__
