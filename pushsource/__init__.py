"""pushsource: a folder-driven source client for Icecast."""

__version__ = "0.1.0"
