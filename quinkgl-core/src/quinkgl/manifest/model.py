"""The manifest's data model: frozen attrs records with validators.

Field names are the on-disk JSON keys. Values are restricted to what hashes reproducibly: strings, integers,
booleans, lists and objects — no floats (write ``0.1`` as the string ``"0.1"``).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

SCHEMA_VERSION = 1
TASK_TYPES = ("class", "regr", "seg", "det")
LABEL_TYPES = ("integer", "float", "one_hot")
FRAMEWORKS = ("pytorch", "tensorflow", "custom")
MEMBERSHIPS = ("open", "certified")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
PUBKEY_RE = re.compile(r"^ed25519:[0-9a-f]{64}\Z")
SIGNATURE_RE = re.compile(r"^ed25519:[0-9a-f]{128}\Z")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
SPECIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
PROVIDES_RE = re.compile(r"^(transport|aggregator|topology|data_policy):[A-Za-z0-9._-]{1,64}\Z")
MAX_DIMS = 8


class FieldValueError(ValueError):
    """A validator's complaint about one field; carries the field name so errors show its full path."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def _one_of(choices: tuple[str, ...]):
    def check(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise FieldValueError(attribute.name, f"must be one of {', '.join(choices)}; got {value!r}")

    return check


def _matches(pattern: re.Pattern[str], what: str):
    def check(_inst: Any, attribute: attrs.Attribute, value: str) -> None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise FieldValueError(attribute.name, f"must be {what}; got {value!r}")

    return check


def _shape(_inst: Any, attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
    if not 1 <= len(value) <= MAX_DIMS or any(d <= 0 for d in value):
        raise FieldValueError(attribute.name, f"must be 1 to {MAX_DIMS} positive integers; got {list(value)}")


def _non_negative(_inst: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value < 0:
        raise FieldValueError(attribute.name, f"must be >= 0; got {value}")


def _positive(_inst: Any, attribute: attrs.Attribute, value: int | None) -> None:
    if value is not None and value <= 0:
        raise FieldValueError(attribute.name, f"must be > 0; got {value}")


def _iso_time(_inst: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None:
        from quinkgl.manifest.times import parse_time

        try:
            parse_time(value)
        except ValueError as err:
            raise FieldValueError(attribute.name, str(err)) from None


@attrs.frozen(kw_only=True)
class Task:
    """What the swarm learns: task type and the shapes/labels every peer's data must have."""

    type: str = attrs.field(validator=_one_of(TASK_TYPES))
    input_shape: tuple[int, ...] = attrs.field(validator=_shape)
    output_shape: tuple[int, ...] = attrs.field(validator=_shape)
    label_type: str = attrs.field(validator=_one_of(LABEL_TYPES))


@attrs.frozen(kw_only=True)
class ModelSpec:
    """Which models may join: framework and the structural hash (see quinkgl.archhash)."""

    framework: str = attrs.field(validator=_one_of(FRAMEWORKS))
    arch_hash: str = attrs.field(validator=_matches(HASH_RE, "sha256:<64 lowercase hex>"))


def _json_params(_inst: Any, attribute: attrs.Attribute, value: dict[str, Any]) -> None:
    def walk(item: Any, where: str) -> None:
        if isinstance(item, float):
            raise ValueError(f'{where}: floats are not allowed (hashing needs a fixed text form); write "{item}"')
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValueError(f"{where}: keys must be strings")
                walk(sub, f"{where}.{key}")
        elif isinstance(item, (list, tuple)):
            for index, sub in enumerate(item):
                walk(sub, f"{where}[{index}]")
        elif item is not None and not isinstance(item, (str, int, bool)):
            raise ValueError(f"{where}: unsupported value {item!r}")

    try:
        walk(value, "params")
    except ValueError as err:
        raise FieldValueError(attribute.name, str(err).removeprefix("params").lstrip(": ")) from None


@attrs.frozen(kw_only=True)
class Component:
    """A named plugin component (aggregator, topology, transport, data policy) and its parameters."""

    name: str = attrs.field(validator=_matches(re.compile(r"^[A-Za-z0-9._-]{1,64}\Z"), "a component name"))
    params: dict[str, Any] = attrs.field(factory=dict, validator=_json_params)


@attrs.frozen(kw_only=True)
class PluginRequirement:
    """A distribution the swarm needs, the versions accepted, and the components it provides."""

    distribution: str = attrs.field(validator=_matches(SPECIFIER_RE, "a distribution name"))
    specifier: str = attrs.field()
    provides: tuple[str, ...] = attrs.field(
        validator=attrs.validators.deep_iterable(_matches(PROVIDES_RE, "'<kind>:<name>'"))
    )

    @specifier.validator
    def _check_specifier(self, attribute: attrs.Attribute, value: str) -> None:
        from packaging.specifiers import InvalidSpecifier, SpecifierSet

        try:
            SpecifierSet(value)
        except InvalidSpecifier:
            raise FieldValueError(
                attribute.name, f"must be a version specifier such as '>=0.4,<0.5'; got {value!r}"
            ) from None


@attrs.frozen(kw_only=True)
class Manifest:
    """A swarm's training protocol. Construct with :func:`quinkgl.manifest.load_manifest` or ``create``."""

    schema_version: int = attrs.field(validator=attrs.validators.in_((SCHEMA_VERSION,)))
    name: str = attrs.field(validator=_matches(NAME_RE, "1-128 letters, digits, '.', '_' or '-'"))
    task: Task
    model: ModelSpec
    aggregation: Component
    topology: Component
    transport: Component
    data_policy: Component
    plugins: tuple[PluginRequirement, ...] = ()
    round_limit: int | None = attrs.field(default=None, validator=_positive)
    byzantine_f: int = attrs.field(default=0, validator=_non_negative)
    expires_at: str | None = attrs.field(default=None, validator=_iso_time)
    bootstrap_peers: tuple[str, ...] = attrs.field(default=())
    # "open": anyone with the manifest may join; "certified": only peers holding a membership certificate from the
    # creator (quinkgl.membership). Absent means open and is left out of the canonical bytes, so manifests written
    # before this field existed keep their swarm ID and signature.
    membership: str = attrs.field(default=MEMBERSHIPS[0], validator=_one_of(MEMBERSHIPS))
    created_at: str = attrs.field(validator=_iso_time)
    creator_pubkey: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_matches(PUBKEY_RE, "ed25519:<64 hex>"))
    )
    signature: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(_matches(SIGNATURE_RE, "ed25519:<128 hex>"))
    )

    @bootstrap_peers.validator
    def _check_bootstrap(self, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
        from quinkgl.manifest.peers import parse_peer_address

        for index, address in enumerate(value):
            try:
                parse_peer_address(address)
            except ValueError as err:
                raise FieldValueError(f"{attribute.name}[{index}]", str(err)) from None

    @property
    def swarm_id(self) -> str:
        """``sha256:`` + hex SHA-256 of the canonical bytes (everything but the signature)."""
        from quinkgl.manifest.codec import swarm_id

        return swarm_id(self)

    @property
    def data_schema_hash(self) -> str:
        """The data schema hash peers derive from the task's shapes and label type."""
        from quinkgl.schema import data_schema_hash

        return data_schema_hash(self.task.input_shape, self.task.output_shape, self.task.label_type)

    @classmethod
    def from_file(cls, path: str) -> Manifest:
        """Read and validate a ``.qgl`` file (raises :class:`quinkgl.errors.ManifestError`)."""
        from quinkgl.manifest.codec import load_manifest

        return load_manifest(path)
