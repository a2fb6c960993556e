"""Moving images between places: registries, layouts, archives, directories."""

from .copy import CopyOptions, CopyResult, copy, copy_async
from .locations import Location, parse_location

__all__ = ["CopyOptions", "CopyResult", "Location", "copy", "copy_async", "parse_location"]
