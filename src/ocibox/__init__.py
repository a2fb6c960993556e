"""ocibox: the Open Container Initiative specifications and their tools in one package.

Public entry points live in the parts: ``ocibox.image`` (image format and
layouts). Errors come from ``ocibox.errors``.
"""

__version__ = "0.1.0"
