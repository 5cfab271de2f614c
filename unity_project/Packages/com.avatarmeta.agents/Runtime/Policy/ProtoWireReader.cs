using System;
using System.Text;

namespace AvatarMeta
{
    /// <summary>
    /// A minimal, allocation-conscious protobuf wire-format reader used to decode
    /// <c>PolicyWeightsEnvelope</c> and <c>PolicyWeights</c> without Google.Protobuf.
    /// </summary>
    /// <remarks>
    /// Parsing happens once per policy version (never per decision), so the evaluator does not
    /// depend on Google.Protobuf. Only the wire types proto3 uses are supported (varint, 64-bit,
    /// length-delimited, 32-bit); unknown fields are skipped, so newer writers stay readable.
    /// Every read is bounds-checked and throws <see cref="FormatException"/> on truncation.
    /// </remarks>
    public struct ProtoWireReader
    {
        /// <summary>Varint field (int32, int64, uint64, bool, enum).</summary>
        public const int WireVarint = 0;
        /// <summary>Fixed 64-bit field (double, fixed64).</summary>
        public const int WireFixed64 = 1;
        /// <summary>Length-delimited field (bytes, string, sub-message, packed repeated).</summary>
        public const int WireLengthDelimited = 2;
        /// <summary>Fixed 32-bit field (float, fixed32).</summary>
        public const int WireFixed32 = 5;

        private readonly byte[] _buffer;
        private readonly int _end;
        private int _position;

        /// <summary>Reads <paramref name="count"/> bytes of <paramref name="buffer"/> from <paramref name="offset"/>.</summary>
        public ProtoWireReader(byte[] buffer, int offset, int count)
        {
            if (buffer == null) throw new ArgumentNullException(nameof(buffer));
            if (offset < 0 || count < 0 || offset + count > buffer.Length)
                throw new ArgumentOutOfRangeException(nameof(count));
            _buffer = buffer;
            _position = offset;
            _end = offset + count;
        }

        /// <summary>The underlying buffer (for slicing length-delimited fields without copying).</summary>
        public byte[] Buffer => _buffer;

        /// <summary>True while unread bytes remain.</summary>
        public bool HasMore => _position < _end;

        /// <summary>Reads the next tag; returns the field number and writes the wire type.</summary>
        public int ReadTag(out int wireType)
        {
            ulong tag = ReadVarint();
            wireType = (int)(tag & 7);
            ulong field = tag >> 3;
            if (field == 0 || field > int.MaxValue) throw new FormatException("protobuf: invalid field number");
            return (int)field;
        }

        /// <summary>Reads a base-128 varint (at most 10 bytes).</summary>
        public ulong ReadVarint()
        {
            ulong result = 0;
            for (int shift = 0; shift < 70; shift += 7)
            {
                if (_position >= _end) throw new FormatException("protobuf: truncated varint");
                byte b = _buffer[_position++];
                result |= (ulong)(b & 0x7F) << shift;
                if ((b & 0x80) == 0) return result;
            }
            throw new FormatException("protobuf: varint longer than 10 bytes");
        }

        /// <summary>Reads an int32 varint (negative values are sign-extended to 10 bytes on the wire).</summary>
        public int ReadInt32() => unchecked((int)ReadVarint());

        /// <summary>Reads a little-endian 64-bit double.</summary>
        public double ReadDouble()
        {
            Require(8);
            double value = BitConverter.IsLittleEndian
                ? BitConverter.ToDouble(_buffer, _position)
                : BitConverter.Int64BitsToDouble(unchecked((long)ReadLittleEndian64(_buffer, _position)));
            _position += 8;
            return value;
        }

        /// <summary>Reads a little-endian 32-bit float.</summary>
        public float ReadFloat()
        {
            Require(4);
            float value = ReadSingleLittleEndian(_buffer, _position);
            _position += 4;
            return value;
        }

        /// <summary>Reads a length prefix and returns the (offset, count) slice of the field's bytes.</summary>
        public void ReadLengthDelimited(out int offset, out int count)
        {
            ulong length = ReadVarint();
            if (length > (ulong)(_end - _position)) throw new FormatException("protobuf: truncated length-delimited field");
            offset = _position;
            count = (int)length;
            _position += count;
        }

        /// <summary>Reads a length-delimited field as a fresh byte array.</summary>
        public byte[] ReadBytes()
        {
            ReadLengthDelimited(out int offset, out int count);
            var bytes = new byte[count];
            System.Buffer.BlockCopy(_buffer, offset, bytes, 0, count);
            return bytes;
        }

        /// <summary>Reads a length-delimited UTF-8 string.</summary>
        public string ReadString()
        {
            ReadLengthDelimited(out int offset, out int count);
            return Encoding.UTF8.GetString(_buffer, offset, count);
        }

        /// <summary>Skips a field of the given wire type.</summary>
        public void SkipField(int wireType)
        {
            switch (wireType)
            {
                case WireVarint: ReadVarint(); break;
                case WireFixed64: Require(8); _position += 8; break;
                case WireLengthDelimited: ReadLengthDelimited(out _, out _); break;
                case WireFixed32: Require(4); _position += 4; break;
                default: throw new FormatException("protobuf: unsupported wire type " + wireType);
            }
        }

        /// <summary>Reads a little-endian float32 at <paramref name="offset"/> independent of host endianness.</summary>
        public static float ReadSingleLittleEndian(byte[] buffer, int offset)
        {
            if (BitConverter.IsLittleEndian) return BitConverter.ToSingle(buffer, offset);
            int bits = buffer[offset] | (buffer[offset + 1] << 8) | (buffer[offset + 2] << 16) | (buffer[offset + 3] << 24);
            return BitConverter.ToSingle(BitConverter.GetBytes(bits), 0);
        }

        private static ulong ReadLittleEndian64(byte[] buffer, int offset)
        {
            ulong value = 0;
            for (int i = 7; i >= 0; i--) value = (value << 8) | buffer[offset + i];
            return value;
        }

        private void Require(int count)
        {
            if (_end - _position < count) throw new FormatException("protobuf: truncated fixed-size field");
        }
    }
}
