"""stephctl: the command line of STEPH. Parses, prints and sets exit codes; the work is in ``steph``."""

from steph import __version__

__all__ = ["__version__"]
