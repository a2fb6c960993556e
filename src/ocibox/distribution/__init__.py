"""The client side of the OCI Distribution Specification: references, auth, registry client."""

from .auth import AuthError, Credentials
from .client import Fetched, Options, Registry, RegistryError, TLSError
from .reference import InvalidReference, Reference

__all__ = ["AuthError", "Credentials", "Fetched", "InvalidReference", "Options", "Reference",
           "Registry", "RegistryError", "TLSError"]
