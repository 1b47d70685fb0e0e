"""Reading, writing and hashing manifests: one strict cattrs converter, one canonical form.

Canonical bytes = the manifest object without ``signature`` as JSON with sorted keys, no whitespace, UTF-8.
The swarm ID and the signature are both computed over exactly these bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import attrs
import cattrs
from cattrs.preconf.json import make_converter

from quinkgl.errors import ManifestError
from quinkgl.manifest.model import FieldValueError, Manifest

MAX_MANIFEST_BYTES = 1024 * 1024


def _strict(expected: type, label: str):
    def hook(value: Any, _type: Any) -> Any:
        # bool is an int subclass; a manifest that says `true` for a count is wrong, not 1.
        if type(value) is not expected:
            raise TypeError(f"expected {label}, got {_json_type(value)}")
        return value

    return hook


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", str: "string", list: "array", dict: "object", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _make_converter() -> cattrs.Converter:
    conv = make_converter(forbid_extra_keys=True, prefer_attrib_converters=False, detailed_validation=True)
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))

    def structure_float(value: Any, _type: Any) -> float:
        # Manifests carry no JSON floats (their text form is not canonical); decimals are written as strings.
        if type(value) is int:
            return float(value)
        if type(value) is str:
            try:
                return float(value)
            except ValueError:
                pass
        raise TypeError(f'expected a number written as a string (e.g. "0.1"), got {_json_type(value)}')

    conv.register_structure_hook(float, structure_float)
    conv.register_unstructure_hook(float, lambda value: repr(value))

    def structure_params(value: Any, _type: Any) -> dict[str, Any]:
        if type(value) is not dict:
            raise TypeError(f"expected an object, got {_json_type(value)}")
        return value

    conv.register_structure_hook_func(lambda t: t == dict[str, Any], structure_params)

    def structure_tuple(value: Any, type_: Any) -> tuple:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {_json_type(value)}")
        (item_type, *_rest) = type_.__args__
        return tuple(conv.structure(item, item_type) for item in value)

    conv.register_structure_hook_func(lambda t: getattr(t, "__origin__", None) is tuple, structure_tuple)
    return conv


converter = _make_converter()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_float(text: str) -> Any:
    raise ValueError(f"floats are not allowed in manifests (found {text}); write them as strings")


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not valid JSON")


def _format_error(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, FieldValueError):
        return f"{_FIELD_MARK}{exc.field}{_FIELD_MARK}{exc}"
    if isinstance(exc, (ValueError, TypeError)) and len(exc.args) >= 2 and isinstance(exc.args[1], attrs.Attribute):
        # attrs' own validators (in_, ge, instance_of) put (message, attribute, ...) in args
        return f"{_FIELD_MARK}{exc.args[1].name}{_FIELD_MARK}{exc.args[0]}"
    if isinstance(exc, (AttributeError, TypeError)) and attrs.has(type_):
        return "expected an object"
    return str(exc) or type(exc).__name__


_FIELD_MARK = "\x1f"


def _problem(line: str) -> tuple[str, str]:
    reason, _, path = line.rpartition(" @ ")
    if not reason:
        return ("", line)
    if reason.startswith(_FIELD_MARK):
        field, reason = reason[1:].split(_FIELD_MARK, 1)
        path = f"{path}.{field}"
    return (path, reason)


def parse_manifest(data: bytes | str, source: str | None = None) -> Manifest:
    """Validate raw manifest bytes; every problem raises :class:`ManifestError` with field paths."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest is {len(data)} bytes; the limit is {MAX_MANIFEST_BYTES}", source=source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ManifestError(f"not UTF-8 text (byte {err.start})", source=source) from None
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_float=_reject_float,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as err:
        raise ManifestError(
            f"not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})", source=source
        ) from None
    except ValueError as err:
        raise ManifestError(f"not a valid manifest: {err}", source=source) from None
    except RecursionError:
        raise ManifestError("not a valid manifest: JSON nested too deeply", source=source) from None
    return structure_manifest(obj, source=source)


def structure_manifest(obj: Any, source: str | None = None) -> Manifest:
    """Turn a decoded JSON object into a :class:`Manifest`, or raise :class:`ManifestError`."""
    if type(obj) is not dict:
        raise ManifestError(f"a manifest must be a JSON object, got {_json_type(obj)}", source=source)
    try:
        return converter.structure(obj, Manifest)
    except cattrs.BaseValidationError as exc:
        problems = [_problem(line) for line in cattrs.transform_error(exc, path="$", format_exception=_format_error)]
        raise ManifestError("invalid manifest", problems, source=source) from None
    except RecursionError:
        raise ManifestError("invalid manifest: nested too deeply", source=source) from None
    except Exception as exc:  # a converter corner we did not foresee must still be a manifest error
        raise ManifestError(f"invalid manifest: {exc}", source=source) from None


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a ``.qgl`` file."""
    source = os.fspath(path)
    from quinkgl.fsutil import read_regular_file

    try:
        data = read_regular_file(source, MAX_MANIFEST_BYTES)
    except OSError as err:
        raise ManifestError(f"cannot read manifest: {err.strerror}", source=source) from None
    return parse_manifest(data, source=source)


def structure_params(params: dict[str, Any], params_cls: type, where: str) -> Any:
    """Validate a component's ``params`` against its attrs class; raise :class:`ManifestError` with paths."""
    try:
        return converter.structure(params, params_cls)
    except cattrs.BaseValidationError as exc:
        problems = [_problem(line) for line in cattrs.transform_error(exc, path=where, format_exception=_format_error)]
        raise ManifestError("invalid component parameters", problems) from None
    except Exception as exc:
        raise ManifestError(f"invalid component parameters at {where}: {exc}") from None


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The manifest as the plain JSON object written to disk."""
    obj = converter.unstructure(manifest)
    if obj.get("membership") == "open":
        del obj["membership"]  # the default; omitted so manifests older than the field keep their bytes
    return obj


def canonical_bytes(manifest: Manifest) -> bytes:
    """The bytes that are hashed and signed: everything but ``signature``, sorted keys, no whitespace."""
    obj = manifest_to_dict(manifest)
    obj.pop("signature", None)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def swarm_id(manifest: Manifest) -> str:
    """``sha256:`` + hex SHA-256 of the canonical bytes."""
    return "sha256:" + hashlib.sha256(canonical_bytes(manifest)).hexdigest()


def dumps_manifest(manifest: Manifest) -> str:
    """Human-readable JSON for a ``.qgl`` file (sorted keys, 2-space indent)."""
    return json.dumps(manifest_to_dict(manifest), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_manifest(manifest: Manifest, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write a manifest atomically (temp file, fsync, rename)."""
    from quinkgl.fsutil import atomic_write_bytes

    atomic_write_bytes(os.fspath(path), dumps_manifest(manifest).encode("utf-8"), overwrite=overwrite)
