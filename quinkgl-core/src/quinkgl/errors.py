"""Error types raised by core, and the one table of process exit codes.

Every error a user can cause is a :class:`QuinkGLError` subclass carrying structured fields; the CLI renders
``str(error)`` and exits with ``error.exit_code``. Nothing in core prints.
"""

from __future__ import annotations

import enum
from typing import TypeVar

E = TypeVar("E", bound=BaseException)


class ExitCode(enum.IntEnum):
    """Process exit codes of the ``quinkgl`` command (documented in docs/cli.md)."""

    OK = 0
    RUNTIME = 1  # a failure while running (network, training, I/O)
    USAGE = 2  # bad command-line usage (click uses 2 as well)
    MANIFEST_INVALID = 3  # not JSON, unknown/missing field, wrong type or value
    SIGNATURE_INVALID = 4  # signature does not verify: the manifest was modified or signed by another key
    UNTRUSTED = 5  # trust policy refused it: wrong key, unsigned under a required key, TOFU conflict
    EXPIRED = 6  # expires_at is in the past
    ARCH_MISMATCH = 7  # the peer's model does not match the manifest's arch hash / data schema
    PLUGIN_MISSING = 8  # a required plugin is missing, broken or the wrong version; unknown component name
    KEY_ERROR = 9  # key file missing, unreadable, not Ed25519, or would be overwritten
    SCRIPT_ERROR = 10  # the peer script is missing a function, raised, or returned the wrong thing
    DATA_ERROR = 11  # dataset files missing or corrupt, loader yields the wrong shapes
    NETWORK = 12  # the transport cannot start or reach peers: port in use, bad address, unusable bootstrap peer
    CHECKPOINT_IN_USE = 13  # another process holds the --checkpoint-dir
    ROUNDS_INCOMPLETE = 14  # `run` ended, unasked, before completing its rounds (e.g. the network service stopped)
    NOT_A_MEMBER = 15  # a certified swarm, and this peer has no valid membership certificate for it
    NO_PEER_REACHABLE = 20  # `quinkgl doctor`: no bootstrap peer of the swarm was reachable
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


class QuinkGLError(Exception):
    """Base class of every error a user can cause; ``exit_code`` says how the CLI exits."""

    exit_code: ExitCode = ExitCode.RUNTIME


def first_in_group(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` exception in ``exc`` or, depth first, in the exception groups nested inside it.

    Trio nurseries raise ``ExceptionGroup``s; Python 3.10 has no such built-in (trio uses the ``exceptiongroup``
    backport there), so groups are recognised by their ``exceptions`` attribute rather than by type.
    """
    if isinstance(exc, kind):
        return exc
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, (tuple, list)):
        for member in inner:
            if isinstance(member, BaseException):
                found = first_in_group(member, kind)
                if found is not None:
                    return found
    return None


def user_error_in(exc: BaseException) -> QuinkGLError | None:
    """The first QuinkGLError inside ``exc`` (which may be a nested ExceptionGroup from a trio nursery)."""
    return first_in_group(exc, QuinkGLError)


class ManifestError(QuinkGLError):
    """The manifest cannot be read or is not a valid manifest; ``problems`` lists ``(path, reason)`` pairs."""

    exit_code = ExitCode.MANIFEST_INVALID

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None, source: str | None = None):
        self.problems = problems or []
        self.source = source
        lines = [f"{source}: {message}" if source else message]
        lines += [f"  {path}: {reason}" if path else f"  {reason}" for path, reason in self.problems]
        super().__init__("\n".join(lines))


class SignatureError(QuinkGLError):
    """The manifest's signature does not verify against its ``creator_pubkey``."""

    exit_code = ExitCode.SIGNATURE_INVALID


class TrustError(QuinkGLError):
    """The trust policy refused the manifest (untrusted key, unsigned under pinned, TOFU conflict)."""

    exit_code = ExitCode.UNTRUSTED


class ExpiredError(QuinkGLError):
    """The manifest's ``expires_at`` has passed."""

    exit_code = ExitCode.EXPIRED


class ArchMismatchError(QuinkGLError):
    """The peer's model or data does not match what the manifest declares."""

    exit_code = ExitCode.ARCH_MISMATCH


class PluginError(QuinkGLError):
    """A component is unknown, or a required plugin is missing, broken or the wrong version."""

    exit_code = ExitCode.PLUGIN_MISSING


class KeyFileError(QuinkGLError):
    """A key file is missing, unreadable, of the wrong type, or would be overwritten."""

    exit_code = ExitCode.KEY_ERROR


class ScriptError(QuinkGLError):
    """The user's peer script is missing a function, raised inside one, or returned the wrong thing."""

    exit_code = ExitCode.SCRIPT_ERROR


class DataError(QuinkGLError):
    """Dataset files are missing or corrupt, or a loader yields data that does not fit the manifest."""

    exit_code = ExitCode.DATA_ERROR


class NetworkError(QuinkGLError):
    """The network cannot be used as configured: a fixed port is taken, an address is malformed, a peer is unreachable.

    The libp2p plugin's ``PortInUseError``, ``BootstrapAddrError`` and core's ``TransportError`` are subclasses.
    """

    exit_code = ExitCode.NETWORK


class CheckpointInUseError(QuinkGLError):
    """Another process (or another peer in this one) already uses this checkpoint directory."""

    exit_code = ExitCode.CHECKPOINT_IN_USE


class MembershipError(QuinkGLError):
    """A membership certificate is missing, unreadable, forged, expired, or for another swarm or peer.

    ``reason`` is a short counter key: malformed, bad_signature, wrong_creator, other_swarm, other_peer, expired,
    missing."""

    exit_code = ExitCode.NOT_A_MEMBER

    def __init__(self, message: str, reason: str = "malformed"):
        super().__init__(message)
        self.reason = reason


class UsageError(QuinkGLError):
    """A combination of options that cannot work (e.g. both --script and --data)."""

    exit_code = ExitCode.USAGE
