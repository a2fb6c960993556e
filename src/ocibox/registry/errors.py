"""The distribution specification's error codes, each with its HTTP status.

The specification lists the codes; the statuses follow the endpoint table and
what clients have long seen from Docker's registry (for example 404 for the
``*_UNKNOWN`` codes and 400 for the ``*_INVALID`` ones).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import OciboxError

STATUS = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
}


class ApiError(OciboxError):
    """An error that the registry answers with the specification's JSON body.

    ``status`` overrides the code's usual status where the specification asks
    for another one (416 for an out-of-order chunk, 413 for a large manifest).
    """

    def __init__(self, code: str, message: str, *, detail: Any = None,
                 status: int | None = None, headers: dict[str, str] | None = None,
                 more: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        if code not in STATUS:
            raise ValueError(f"unknown registry error code {code!r}")
        self.code = code
        self.detail = detail
        self.status = status if status is not None else STATUS[code]
        self.headers = headers or {}
        self.more = more or []

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry, *self.more]}).encode()


def blob_unknown(digest: str) -> ApiError:
    return ApiError("BLOB_UNKNOWN", "blob unknown to registry", detail={"digest": digest})


def manifest_unknown(reference: str) -> ApiError:
    return ApiError("MANIFEST_UNKNOWN", "manifest unknown", detail={"reference": reference})


def name_unknown(name: str) -> ApiError:
    return ApiError("NAME_UNKNOWN", "repository name not known to registry", detail={"name": name})


def upload_unknown(uuid: str) -> ApiError:
    return ApiError("BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", detail={"uuid": uuid})


def unsupported(what: str) -> ApiError:
    return ApiError("UNSUPPORTED", f"{what} is disabled on this registry")
