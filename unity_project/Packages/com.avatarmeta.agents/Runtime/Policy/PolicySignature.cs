using System;
using System.Security.Cryptography;
using System.Text;

namespace AvatarMeta
{
    /// <summary>Why a signed policy was refused.</summary>
    public sealed class PolicyVerificationException : Exception
    {
        /// <summary>Creates the exception with a human-readable reason.</summary>
        public PolicyVerificationException(string message) : base(message) { }
    }

    /// <summary>
    /// An RSA public key that verifies PolicyWeights envelopes: RSASSA-PKCS1-v1_5 with SHA-256
    /// (docs/exports.md). Mono has no working ECDsa and rejects PSS, hence this scheme.
    /// </summary>
    /// <remarks>
    /// The PEM (<c>-----BEGIN PUBLIC KEY-----</c>, SubjectPublicKeyInfo, or
    /// <c>-----BEGIN RSA PUBLIC KEY-----</c>, PKCS#1) is decoded here by a small DER reader into
    /// <see cref="RSAParameters"/>, because <c>RSA.ImportSubjectPublicKeyInfo</c> does not exist
    /// on Unity's Mono/.NET Standard 2.1 profile.
    /// </remarks>
    public sealed class PolicyPublicKey : IDisposable
    {
        private const string RsaEncryptionOid = "1.2.840.113549.1.1.1";
        private readonly RSA _rsa;

        /// <summary>First 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo (the envelope's key_id).</summary>
        public string KeyId { get; }

        /// <summary>Modulus size in bits.</summary>
        public int KeySizeBits { get; }

        private PolicyPublicKey(RSAParameters parameters, string keyId)
        {
            _rsa = RSA.Create();
            _rsa.ImportParameters(parameters);
            KeyId = keyId;
            KeySizeBits = TrimLeadingZeros(parameters.Modulus).Length * 8;
        }

        /// <summary>Wraps raw RSA parameters (modulus, exponent); the key id is unknown.</summary>
        public static PolicyPublicKey FromParameters(RSAParameters parameters)
        {
            return new PolicyPublicKey(new RSAParameters { Modulus = parameters.Modulus, Exponent = parameters.Exponent }, null);
        }

        /// <summary>Loads a PEM public key; throws <see cref="FormatException"/> if it is not an RSA key.</summary>
        public static PolicyPublicKey FromPem(string pem)
        {
            if (pem == null) throw new ArgumentNullException(nameof(pem));
            if (pem.Contains("-----BEGIN RSA PUBLIC KEY-----"))
            {
                byte[] pkcs1 = PemBody(pem, "RSA PUBLIC KEY");
                return new PolicyPublicKey(ParseRsaPublicKey(pkcs1, 0, pkcs1.Length), null);
            }
            return FromSubjectPublicKeyInfo(PemBody(pem, "PUBLIC KEY"));
        }

        /// <summary>Loads a DER SubjectPublicKeyInfo holding an RSA key.</summary>
        public static PolicyPublicKey FromSubjectPublicKeyInfo(byte[] der)
        {
            var outer = new DerReader(der, 0, der.Length);
            var spki = outer.ReadSequence();
            var algorithm = spki.ReadSequence();
            string oid = algorithm.ReadObjectIdentifier();
            if (oid != RsaEncryptionOid) throw new FormatException("public key is not RSA (algorithm " + oid + ")");
            spki.ReadBitString(out int keyOffset, out int keyCount);
            var parameters = ParseRsaPublicKey(der, keyOffset, keyCount);
            string keyId;
            using (var sha = SHA256.Create())
            {
                keyId = ToHex(sha.ComputeHash(der), 8);
            }
            return new PolicyPublicKey(parameters, keyId);
        }

        /// <summary>True if <paramref name="signature"/> is a valid PKCS#1 v1.5 SHA-256 signature over exactly <paramref name="data"/>.</summary>
        public bool Verify(byte[] data, byte[] signature)
        {
            if (data == null || signature == null || signature.Length == 0) return false;
            try
            {
                return _rsa.VerifyData(data, signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
            }
            catch (CryptographicException)
            {
                return false;
            }
        }

        /// <summary>Releases the RSA instance.</summary>
        public void Dispose() => _rsa.Dispose();

        private static RSAParameters ParseRsaPublicKey(byte[] der, int offset, int count)
        {
            var outer = new DerReader(der, offset, count);
            var key = outer.ReadSequence();
            return new RSAParameters
            {
                Modulus = TrimLeadingZeros(key.ReadIntegerBytes()),
                Exponent = TrimLeadingZeros(key.ReadIntegerBytes()),
            };
        }

        private static byte[] PemBody(string pem, string label)
        {
            string begin = "-----BEGIN " + label + "-----";
            string end = "-----END " + label + "-----";
            int start = pem.IndexOf(begin, StringComparison.Ordinal);
            int stop = pem.IndexOf(end, StringComparison.Ordinal);
            if (start < 0 || stop < start) throw new FormatException("PEM block '" + label + "' not found");
            start += begin.Length;
            var base64 = new StringBuilder(stop - start);
            for (int i = start; i < stop; i++)
            {
                char c = pem[i];
                if (!char.IsWhiteSpace(c)) base64.Append(c);
            }
            return Convert.FromBase64String(base64.ToString());
        }

        private static byte[] TrimLeadingZeros(byte[] value)
        {
            int first = 0;
            while (first < value.Length - 1 && value[first] == 0) first++;
            if (first == 0) return value;
            var trimmed = new byte[value.Length - first];
            Buffer.BlockCopy(value, first, trimmed, 0, trimmed.Length);
            return trimmed;
        }

        private static string ToHex(byte[] bytes, int count)
        {
            var sb = new StringBuilder(count * 2);
            for (int i = 0; i < count; i++) sb.Append(bytes[i].ToString("x2"));
            return sb.ToString();
        }

        /// <summary>Just enough DER to read SubjectPublicKeyInfo and PKCS#1 RSAPublicKey.</summary>
        private struct DerReader
        {
            private readonly byte[] _der;
            private readonly int _end;
            private int _pos;

            public DerReader(byte[] der, int offset, int count)
            {
                _der = der;
                _pos = offset;
                _end = offset + count;
            }

            public DerReader ReadSequence()
            {
                ReadElement(0x30, out int off, out int len);
                return new DerReader(_der, off, len);
            }

            public byte[] ReadIntegerBytes()
            {
                ReadElement(0x02, out int off, out int len);
                var value = new byte[len];
                Buffer.BlockCopy(_der, off, value, 0, len);
                return value;
            }

            public void ReadBitString(out int offset, out int count)
            {
                ReadElement(0x03, out int off, out int len);
                if (len < 1 || _der[off] != 0) throw new FormatException("DER: unexpected unused bits in key BIT STRING");
                offset = off + 1;
                count = len - 1;
            }

            public string ReadObjectIdentifier()
            {
                ReadElement(0x06, out int off, out int len);
                if (len < 1) throw new FormatException("DER: empty OID");
                var sb = new StringBuilder();
                int first = _der[off];
                sb.Append(first / 40).Append('.').Append(first % 40);
                long value = 0;
                for (int i = off + 1; i < off + len; i++)
                {
                    value = (value << 7) | (uint)(_der[i] & 0x7F);
                    if ((_der[i] & 0x80) == 0) { sb.Append('.').Append(value); value = 0; }
                }
                return sb.ToString();
            }

            private void ReadElement(byte expectedTag, out int offset, out int length)
            {
                if (_pos + 2 > _end) throw new FormatException("DER: truncated");
                byte tag = _der[_pos++];
                if (tag != expectedTag) throw new FormatException("DER: expected tag 0x" + expectedTag.ToString("x2") + ", got 0x" + tag.ToString("x2"));
                int len = _der[_pos++];
                if ((len & 0x80) != 0)
                {
                    int bytes = len & 0x7F;
                    if (bytes < 1 || bytes > 4 || _pos + bytes > _end) throw new FormatException("DER: bad length");
                    len = 0;
                    for (int i = 0; i < bytes; i++) len = (len << 8) | _der[_pos++];
                }
                if (len < 0 || len > _end - _pos) throw new FormatException("DER: element runs past its parent");
                offset = _pos;
                length = len;
                _pos += len;
            }
        }
    }

    /// <summary>
    /// Opens a serialised <c>PolicyWeightsEnvelope</c>: verifies the signature over the exact
    /// payload bytes received, and only then parses the PolicyWeights inside.
    /// </summary>
    public static class SignedPolicyLoader
    {
        /// <summary>The only signature scheme accepted.</summary>
        public const string SignatureAlgorithm = "RSA-PKCS1v15-SHA256";

        /// <summary>Verifies and parses; throws <see cref="PolicyVerificationException"/> when refused.</summary>
        public static PolicyWeightsData Open(byte[] envelopeBytes, PolicyPublicKey trustedKey)
        {
            if (trustedKey == null) throw new PolicyVerificationException("no trusted public key: every policy is refused");
            if (envelopeBytes == null) throw new ArgumentNullException(nameof(envelopeBytes));
            byte[] payload = null, signature = null;
            string keyId = "", algorithm = "";
            try
            {
                var reader = new ProtoWireReader(envelopeBytes, 0, envelopeBytes.Length);
                while (reader.HasMore)
                {
                    int field = reader.ReadTag(out int wire);
                    if (wire != ProtoWireReader.WireLengthDelimited) { reader.SkipField(wire); continue; }
                    switch (field)
                    {
                        case 1: payload = reader.ReadBytes(); break;
                        case 2: signature = reader.ReadBytes(); break;
                        case 3: keyId = reader.ReadString(); break;
                        case 4: algorithm = reader.ReadString(); break;
                        default: reader.SkipField(wire); break;
                    }
                }
            }
            catch (FormatException err)
            {
                throw new PolicyVerificationException("malformed envelope: " + err.Message);
            }
            if (signature == null || signature.Length == 0) throw new PolicyVerificationException("unsigned policy refused");
            if (payload == null) throw new PolicyVerificationException("envelope has no payload");
            if (algorithm.Length > 0 && algorithm != SignatureAlgorithm)
                throw new PolicyVerificationException("unsupported signature algorithm '" + algorithm + "'");
            if (!trustedKey.Verify(payload, signature))
            {
                if (trustedKey.KeyId != null && keyId.Length > 0 && keyId != trustedKey.KeyId)
                    throw new PolicyVerificationException("signed by key " + keyId + ", but this verifier trusts key " + trustedKey.KeyId);
                throw new PolicyVerificationException("signature does not verify with the trusted key (tampered, or signed by another key)");
            }
            try
            {
                return PolicyWeightsData.Parse(payload);
            }
            catch (FormatException err)
            {
                throw new PolicyVerificationException("signed payload is not a PolicyWeights message: " + err.Message);
            }
        }
    }
}
