"""One hierarchy of exceptions for the whole library.

Every error carries a one-line message that says what failed and on what; an
optional ``hint`` says what to do about it. The CLI prints ``ocibox: <message>``
(and the hint) and exits non-zero; nothing below the CLI prints or exits.
"""

# No ``from __future__ import annotations``: the runtime imports this module on
# its error paths and would load __future__ for it alone.


class OciboxError(Exception):
    """Base of every error ocibox raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


# --- content ---------------------------------------------------------------


class InvalidDigest(OciboxError):
    """A digest string does not follow the specification's grammar."""


class UnsupportedDigestAlgorithm(InvalidDigest):
    """A digest names an algorithm that ocibox does not implement."""


class DigestMismatch(OciboxError):
    """Content hashed to another digest than the one it was expected to have."""

    def __init__(self, what: str, expected: str, actual: str) -> None:
        super().__init__(f"{what}: digest mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class SizeMismatch(OciboxError):
    """Content had another length than its descriptor says."""

    def __init__(self, what: str, expected: int, actual: int) -> None:
        super().__init__(f"{what}: size mismatch: expected {expected} bytes, got {actual}")
        self.expected = expected
        self.actual = actual


class InvalidObject(OciboxError):
    """A manifest, index, config or descriptor breaks a rule of the specification."""

    def __init__(self, what: str, field: str, rule: str) -> None:
        where = f"{what}: {field}" if field else what
        super().__init__(f"{where}: {rule}")
        self.what = what
        self.field = field
        self.rule = rule


class MalformedJSON(OciboxError):
    """Bytes that should be a JSON object are not."""


class UnsupportedMediaType(OciboxError):
    """A media type that ocibox cannot handle where it was found."""


# --- storage ---------------------------------------------------------------


class NotFound(OciboxError):
    """Something asked for does not exist."""


class BlobNotFound(NotFound):
    pass


class ReferenceNotFound(NotFound):
    """A tag or name that no entry in an index carries."""


class LayoutError(OciboxError):
    """An OCI image layout is missing, damaged, or not a layout at all."""


class AlreadyExists(OciboxError):
    pass


class LockTimeout(OciboxError):
    pass


# --- layers and filesystems -----------------------------------------------


class UnsafeEntry(OciboxError):
    """A tar entry that would write outside the target directory."""

    def __init__(self, entry: str, reason: str) -> None:
        super().__init__(f"unsafe layer entry {entry!r}: {reason}")
        self.entry = entry
        self.reason = reason


class LayerError(OciboxError):
    """A layer cannot be read, written or applied."""


class BundleError(OciboxError):
    """A runtime bundle is missing what an operation needs."""


class ContainerStateError(OciboxError):
    """A runtime operation that the container's current status does not allow."""


class UsageError(OciboxError):
    """The caller asked for something that makes no sense as asked."""

    exit_code = 2


class NotImplementedYet(OciboxError):
    """A feature that ocibox does not have yet: said plainly, never faked."""
