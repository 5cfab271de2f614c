"""Signing and verifying PolicyWeights: RSA-2048, PKCS#1 v1.5, SHA-256, over exact bytes.

Why this algorithm: Unity's Mono runtime can verify it (Mono's ECDsa throws
NotImplementedException and its RSA rejects PSS padding; checked under mono 6.8).

Canonical signed bytes: a `PolicyWeightsEnvelope` carries `payload` = the serialised
`PolicyWeights` exactly as the signer produced it, and `signature` = RSASSA-PKCS1-v1_5(SHA-256)
over those payload bytes. A verifier checks the signature over the bytes it received and parses
the payload only afterwards. Nobody re-serialises a message to verify it, so protobuf
serialisation differences between languages and versions can never break (or forge) a check.
In C#: `rsa.VerifyData(envelope.Payload.ToByteArray(), envelope.Signature.ToByteArray(),
HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1)`, then `PolicyWeights.Parser.ParseFrom`.

This module needs no torch: the headless world and game-side tools import it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from avatar_meta.proto_gen.v1 import policy_weights_pb2 as pw

SIGNATURE_ALGORITHM = "RSA-PKCS1v15-SHA256"
KEY_BITS = 2048
PUBLIC_KEY_ENV = "AVATAR_META_PUBLIC_KEY"
"""Environment variable holding the path of the PEM public key that verifiers trust."""


class VerificationError(ValueError):
    """A policy was refused: unsigned, tampered with, signed by another key, or malformed."""


def generate_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """First 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo (names the key)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def public_pem(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_keypair(out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write `private.pem` (PKCS#8, mode 0600, created that way, never world-readable) and
    `public.pem` (SubjectPublicKeyInfo) into `out_dir`. Refuses to overwrite a private key."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / "private.pem", folder / "public.pem"
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists; refusing to overwrite a private key")
    key = generate_private_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(private_path, 0o600)  # in case the umask widened nothing but the mode differs
    public_path.write_bytes(public_pem(key.public_key()))
    return private_path, public_path


def load_private_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return key


def load_public_key(source: str | os.PathLike[str] | bytes) -> rsa.RSAPublicKey:
    """A PEM public key from a path or from PEM bytes."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    if key.key_size < KEY_BITS:
        raise ValueError(f"RSA key of {key.key_size} bits; at least {KEY_BITS} required")
    return key


def sign_payload(payload: bytes, private_key: rsa.RSAPrivateKey) -> pw.PolicyWeightsEnvelope:
    """Envelope around already serialised PolicyWeights bytes."""
    signature = private_key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    return pw.PolicyWeightsEnvelope(
        payload=payload,
        signature=signature,
        key_id=key_id(private_key.public_key()),
        signature_algorithm=SIGNATURE_ALGORITHM,
    )


def sign(weights: pw.PolicyWeights, private_key: rsa.RSAPrivateKey) -> pw.PolicyWeightsEnvelope:
    """Serialise `weights` once and sign exactly those bytes."""
    return sign_payload(weights.SerializeToString(), private_key)


def verify(
    envelope: pw.PolicyWeightsEnvelope | bytes, public_key: rsa.RSAPublicKey
) -> pw.PolicyWeights:
    """The PolicyWeights inside a correctly signed envelope; VerificationError otherwise.

    `envelope` may be the message or its serialised bytes (as received from a channel).
    """
    if isinstance(envelope, pw.PolicyWeightsEnvelope):
        return _verify(envelope, public_key)
    try:
        parsed = pw.PolicyWeightsEnvelope.FromString(bytes(envelope))
    except Exception as err:  # protobuf raises DecodeError and friends
        raise VerificationError(f"not a PolicyWeightsEnvelope: {err}") from None
    return _verify(parsed, public_key)


def _verify(envelope: pw.PolicyWeightsEnvelope, public_key: rsa.RSAPublicKey) -> pw.PolicyWeights:
    if not envelope.signature:
        raise VerificationError("policy is unsigned (empty signature); refused")
    if envelope.signature_algorithm not in ("", SIGNATURE_ALGORITHM):
        raise VerificationError(
            f"unsupported signature algorithm {envelope.signature_algorithm!r}; "
            f"expected {SIGNATURE_ALGORITHM}"
        )
    expected_id = key_id(public_key)
    try:
        public_key.verify(envelope.signature, envelope.payload, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        if envelope.key_id and envelope.key_id != expected_id:
            raise VerificationError(
                f"policy signed by key {envelope.key_id}, but this verifier trusts key "
                f"{expected_id}; refused"
            ) from None
        raise VerificationError(
            "signature does not match the payload (tampered or corrupted); refused"
        ) from None
    try:
        return pw.PolicyWeights.FromString(envelope.payload)
    except Exception as err:
        raise VerificationError(f"signed payload is not a PolicyWeights: {err}") from None
