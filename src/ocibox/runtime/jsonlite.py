"""JSON for the runtime's hot paths, without importing the json package.

``import json`` costs ~5 ms of start-up: json.decoder imports ``re`` (and re
imports enum, functools, collections). ``state``, ``start``, ``kill`` and
``delete`` only read and write small JSON documents, so they use the C
scanner and encoder of the ``_json`` module that json itself is built on; the
results are json.loads' and json.dumps' (ensure_ascii, the same separators, the
same ``indent`` layout). Anything unusual (an error message, a type the C
encoder does not take) falls back to the json package.
"""

import _json

_WS = " \t\n\r"


class _Context:
    """What ``_json.make_scanner`` reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(lambda name: float(name.replace("Infinity", "inf")))
    memo: dict = {}


_scan = _json.make_scanner(_Context())


def loads(data: str | bytes):
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8-sig" if data[:3] == b"\xef\xbb\xbf" else "utf-8")
    start = len(data) - len(data.lstrip(_WS))
    try:
        obj, end = _scan(data, start)
    except Exception:
        # StopIteration (nothing to scan), or an error that _json can only build
        # from json.decoder, which may not be loaded: it then leaves a SystemError.
        obj, end = None, -1
    if end < 0 or data[end:].strip(_WS):
        import json

        return json.loads(data)  # raises json's ValueError with its message
    return obj


def _fail(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o in (float("inf"), float("-inf")):
        return "Infinity" if o > 0 else "-Infinity"
    return float.__repr__(o)


def _encoder(item_sep: str, key_sep: str):
    return _json.make_encoder(
        None, _fail, _json.encode_basestring_ascii, None, key_sep, item_sep, False, False, True
    )


_encode = _encoder(", ", ": ")


def dumps(obj, indent: int | None = None, separators: tuple[str, str] | None = None) -> str:
    if indent is None:
        encode = _encode if separators is None else _encoder(*separators)
        return "".join(encode(obj, 0))
    if separators is not None:
        import json

        return json.dumps(obj, indent=indent, separators=separators)
    return _pretty(obj, " " * indent, "\n")


def _pretty(obj, step: str, newline: str) -> str:
    if isinstance(obj, dict) and obj:
        inner = newline + step
        items = (
            f"{inner}{_json.encode_basestring_ascii(_key(k))}: {_pretty(v, step, inner)}"
            for k, v in obj.items()
        )
        return "{" + ",".join(items) + newline + "}"
    if isinstance(obj, (list, tuple)) and obj:
        inner = newline + step
        return "[" + ",".join(f"{inner}{_pretty(v, step, inner)}" for v in obj) + newline + "]"
    return "".join(_encode(obj, 0))


def _key(k) -> str:
    if isinstance(k, str):
        return k
    if k is True or k is False or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    if isinstance(k, float):
        return _float(k)
    if isinstance(k, int):
        return int.__repr__(k)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(k).__name__}")
