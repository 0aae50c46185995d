"""Ed25519 keys and the package signature (SPEC §12).

- A key is known by its fingerprint: the SHA-256 (hex) of its raw 32-byte public key.
- The signature is detached (`manifest.sig`) and covers the exact bytes of
  `manifest.json`, so no re-serialization can hide an edit.
- A signature is only as good as its signer: `check_signature` reports a valid
  signature by a key outside the trusted set as UNTRUSTED.
- Private keys are files readable by their owner only; one that group or others can
  read is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from daemon.errors import InputError


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """The key's fingerprint: SHA-256 (hex) of its raw public bytes."""
    return hashlib.sha256(raw_public(key)).hexdigest()


def public_pem(key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo)."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_private_key(path: Path, option: str = "--sign-key") -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM). Raises InputError naming the file when it is
    missing, unreadable, readable by group or others, or not an unencrypted Ed25519 key."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    if mode & 0o077:
        raise InputError(f"{option} {path}: readable by group or others (mode {mode:04o}); "
                         f"a signing key must be private: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{option} {path}: not an unencrypted PEM private key "
                         f"({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{option} {path}: not an Ed25519 key")
    return key


def load_public_key(path: Path, option: str = "--public-key") -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM). Raises InputError for a missing file, a private
    key given by mistake (said so), or anything else that is not an Ed25519 public key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    if b"PRIVATE KEY" in data:
        raise InputError(f"{option} {path}: this is a private key; give the public key "
                         f"(the .pub file `segwatch keys generate` wrote beside it)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise InputError(f"{option} {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(f"{option} {path}: not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class NewKey:
    private: Path
    public: Path
    fingerprint: str
    public_pem: str


def generate_key(path: Path) -> NewKey:
    """Write a new Ed25519 private key (PEM, 0600, never overwriting) to `path` and its
    public key to `path.pub`. Raises InputError."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = path.with_name(path.name + ".pub")
    write_new(path, pem, "key")
    write_new(public, public_pem(key.public_key()).encode(), "public key", mode=0o644)
    return NewKey(path, public, fingerprint(key.public_key()), public_pem(key.public_key()))


def write_new(path: Path, content: bytes, what: str, mode: int = 0o600) -> None:
    """Create `path` (never following a link, never overwriting) with `mode`, write
    `content`. Raises InputError."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    except FileExistsError:
        raise InputError(f"{path} exists; not overwriting a {what}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write ({exc.strerror})") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)


def sign(key: Ed25519PrivateKey, content: bytes) -> bytes:
    """The detached signature file's content for `content` (base64, one line)."""
    return base64.b64encode(key.sign(content)) + b"\n"


def check_signature(content: bytes, signature: bytes, public_hex: str,
                    trusted: Iterable[str]) -> str | None:
    """Why the detached `signature` over `content` by the key `public_hex` (raw, hex)
    does not hold, or None. A valid signature by a key whose fingerprint is not in
    `trusted` is reported as UNTRUSTED."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        key.verify(base64.b64decode(signature.strip(), validate=True), content)
    except (ValueError, TypeError, InvalidSignature):
        return "manifest.sig: the signature does not match manifest.json (altered or forged)"
    signer = fingerprint(key)
    if signer not in set(trusted):
        return (f"UNTRUSTED: signed by key {signer}, which is not a trusted signer "
                "(--public-key, --fingerprint or [export] trusted_keys)")
    return None


class DuplicateKey(ValueError):
    """A JSON object names the same member twice."""


def strict_json(content: bytes) -> Any:
    """Parse JSON refusing duplicate member names anywhere (a second `files` or
    `liabilities` member could say something else than the first). Raises ValueError."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        names = [name for name, _ in items]
        twice = sorted(n for n, count in Counter(names).items() if count > 1)
        if twice:
            raise DuplicateKey(f"duplicate key {twice[0]!r}")
        return dict(items)

    return json.loads(content, object_pairs_hook=pairs)


def trusted_fingerprints(public_keys: Iterable[Path], fingerprints: Iterable[str],
                         configured: Iterable[str]) -> frozenset[str]:
    """Every trusted signer: the keys given, the fingerprints given (hex, ':' allowed),
    the configured ones. Raises InputError for a malformed fingerprint or key file."""
    out = {fingerprint(load_public_key(path)) for path in public_keys}
    for text in (*fingerprints, *configured):
        value = text.strip().lower().replace(":", "")
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise InputError(f"--fingerprint {text!r}: expected 64 hex digits")
        out.add(value)
    return frozenset(out)
