"""Just enough MLS (RFC 9420) for a fake voice gateway to be DAVE's external sender.

The voice gateway is MLS's "delivery service": it never holds group secrets, it signs
Add and Remove proposals as the group's external sender, and it reads the public part
of the commits members send back (their epoch, their sender, the proposals they
reference) to pick the first valid one. Members do all the real MLS work (davey).

Encoding is RFC 9420's TLS presentation language: big-endian integers, and
``opaque<V>`` vectors whose length is a variable-size integer (§2.1.2). The cipher suite
is DAVE protocol version 1's: P-256, SHA-256, ECDSA signatures (DER).

Pure: no I/O; :class:`ExternalSender` holds a P-256 key made with ``cryptography``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError as exc:  # pragma: no cover - only without the voice extra
    raise ImportError(
        "the fake voice gateway signs DAVE proposals with cryptography: "
        "pip install 'wavegate[voice]'"
    ) from exc

MLS10 = 1
PUBLIC_MESSAGE = 1
SENDER_MEMBER = 1
SENDER_EXTERNAL = 2
CONTENT_PROPOSAL = 2
CONTENT_COMMIT = 3
PROPOSAL_ADD = 1
PROPOSAL_REMOVE = 3
CREDENTIAL_BASIC = 1
_PROPOSAL_INLINE = 1
_PROPOSAL_REFERENCE = 2


class MLSFormatError(ValueError):
    """Bytes that are not the MLS structure expected."""


def varint(n: int) -> bytes:
    """An MLS variable-size integer (RFC 9420 §2.1.2): 1, 2 or 4 bytes."""
    if n < 1 << 6:
        return bytes((n,))
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    if n < 1 << 30:
        return (n | 0x80000000).to_bytes(4, "big")
    raise ValueError(f"{n} is too large for an MLS vector length")


def opaque(data: bytes) -> bytes:
    """``opaque data<V>``: a variable-size length, then the bytes."""
    return varint(len(data)) + data


class Reader:
    """Reads TLS-encoded fields from ``data``, from ``offset``."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self.data = data
        self.offset = offset

    def take(self, size: int) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise MLSFormatError(f"{size} bytes needed at {self.offset}, {len(self.data)} in all")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self.take(8))[0])

    def varint(self) -> int:
        first = self.take(1)[0]
        prefix, value = first >> 6, first & 0x3F
        if prefix == 3:
            raise MLSFormatError("invalid variable-size integer prefix")
        for _ in range((1 << prefix) - 1):
            value = value << 8 | self.take(1)[0]
        return value

    def opaque(self) -> bytes:
        return self.take(self.varint())


class ExternalSender:
    """The voice gateway's MLS identity: a P-256 signing key and a basic credential."""

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.public_key = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def package(self) -> bytes:
        """The ExternalSender struct (the body of op 25): signature key, credential."""
        return opaque(self.public_key) + struct.pack(">H", CREDENTIAL_BASIC) + opaque(b"\x00")

    def proposal(self, group_id: int, epoch: int, proposal: bytes) -> bytes:
        """An external proposal: an MLSMessage (PublicMessage) signed by this sender."""
        content = (
            opaque(group_id.to_bytes(8, "big"))
            + struct.pack(">QBI", epoch, SENDER_EXTERNAL, 0)
            + opaque(b"")  # authenticated_data
            + bytes((CONTENT_PROPOSAL,))
            + proposal
        )
        header = struct.pack(">HH", MLS10, PUBLIC_MESSAGE)
        # SignWithLabel(key, "FramedContentTBS", version || wire_format || content): an
        # external sender signs no group context (RFC 9420 §6.1).
        to_sign = opaque(b"MLS 1.0 FramedContentTBS") + opaque(header + content)
        signature = self._key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
        return header + content + opaque(signature)


def add(key_package: bytes) -> bytes:
    """An Add proposal for the member whose (bare) KeyPackage this is."""
    return struct.pack(">H", PROPOSAL_ADD) + key_package


def remove(leaf_index: int) -> bytes:
    """A Remove proposal for the member at ``leaf_index``."""
    return struct.pack(">HI", PROPOSAL_REMOVE, leaf_index)


def proposal_ref(message: bytes) -> bytes:
    """The ProposalRef of a proposal MLSMessage: RefHash over it, less its version."""
    return hashlib.sha256(opaque(b"MLS 1.0 Proposal Reference") + opaque(message[2:])).digest()


def append_vector(messages: Sequence[bytes]) -> bytes:
    """The body of op 27 "append" after its operation type: the proposal messages."""
    return opaque(b"".join(messages))


def revoke_vector(refs: Sequence[bytes]) -> bytes:
    """The body of op 27 "revoke" after its operation type: the proposal refs."""
    return opaque(b"".join(opaque(ref) for ref in refs))


def key_package_user(key_package: bytes) -> int:
    """The user id in a KeyPackage's basic credential (its 8 big-endian bytes)."""
    reader = Reader(key_package)
    reader.take(4)  # version, cipher suite
    reader.opaque()  # init_key
    reader.opaque()  # leaf node: encryption_key
    reader.opaque()  # signature_key
    if reader.u16() != CREDENTIAL_BASIC:
        raise MLSFormatError("key package credential is not basic")
    identity = reader.opaque()
    if len(identity) != 8:
        raise MLSFormatError(f"basic credential identity of {len(identity)} bytes, not 8")
    return int.from_bytes(identity, "big")


@dataclass(frozen=True, slots=True)
class Commit:
    """The public part of a member's commit (op 28), and what followed it."""

    message: bytes
    """The commit MLSMessage (what op 29 announces)."""
    welcome: bytes
    """The Welcome after it (empty if the commit adds nobody)."""
    group_id: int
    epoch: int
    sender_leaf: int
    proposal_refs: tuple[bytes, ...]
    inline_proposals: int
    """Proposals carried by value: DAVE allows only references to the gateway's."""


def read_commit(body: bytes) -> Commit:
    """Split an op 28 body into the commit MLSMessage and the Welcome after it.

    Raises:
        MLSFormatError: not a PublicMessage commit from a member.
    """
    reader = Reader(body)
    if reader.u16() != MLS10 or reader.u16() != PUBLIC_MESSAGE:
        raise MLSFormatError("not an MLS 1.0 PublicMessage")
    group_id = int.from_bytes(reader.opaque(), "big")
    epoch, sender_type, sender_leaf = reader.u64(), reader.u8(), reader.u32()
    if sender_type != SENDER_MEMBER:
        raise MLSFormatError(f"commit from sender type {sender_type}, not a member")
    reader.opaque()  # authenticated_data
    if reader.u8() != CONTENT_COMMIT:
        raise MLSFormatError("not a commit")
    refs, inline = _proposals(Reader(reader.opaque()))
    if reader.u8():  # optional<UpdatePath>
        _skip_leaf_node(reader)
        reader.opaque()  # UpdatePathNode nodes<V>
    reader.opaque()  # signature
    reader.opaque()  # confirmation_tag
    reader.opaque()  # membership_tag (a member sent it)
    end = reader.offset
    return Commit(body[:end], body[end:], group_id, epoch, sender_leaf, refs, inline)


def _proposals(reader: Reader) -> tuple[tuple[bytes, ...], int]:
    refs, inline = [], 0
    while reader.offset < len(reader.data):
        kind = reader.u8()
        if kind == _PROPOSAL_REFERENCE:
            refs.append(reader.opaque())
        elif kind == _PROPOSAL_INLINE:
            inline += 1
            return tuple(refs), inline  # its size depends on its type: stop counting here
        else:
            raise MLSFormatError(f"unknown ProposalOrRef type {kind}")
    return tuple(refs), inline


def _skip_leaf_node(reader: Reader) -> None:
    reader.opaque()  # encryption_key
    reader.opaque()  # signature_key
    reader.u16()  # credential type (basic: identity<V>; x509: certificates<V>)
    reader.opaque()
    for _ in range(5):  # capabilities: versions, cipher_suites, extensions, proposals, credentials
        reader.opaque()
    source = reader.u8()
    if source == 1:  # key_package: lifetime
        reader.take(16)
    elif source == 3:  # commit: parent_hash
        reader.opaque()
    reader.opaque()  # extensions
    reader.opaque()  # signature
