using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace AvatarMeta
{
    /// <summary>
    /// Strict little-endian reader for side-channel payloads (int32, float32, int64, ASCII string
    /// with int32 length, float list with int32 count). Unlike ML-Agents' IncomingMessage it never
    /// returns defaults past the end: a truncated record throws <see cref="FormatException"/>, so a
    /// truncated task is never silently turned into area 0 (docs/world-protocol.md).
    /// </summary>
    public struct StrictPayloadReader
    {
        private readonly byte[] _data;
        private int _pos;

        /// <summary>Reads <paramref name="data"/> from the start.</summary>
        public StrictPayloadReader(byte[] data) { _data = data ?? throw new ArgumentNullException(nameof(data)); _pos = 0; }

        /// <summary>Bytes not read yet.</summary>
        public int Remaining => _data.Length - _pos;

        /// <summary>Reads an int32.</summary>
        public int ReadInt32(string field)
        {
            Require(4, field);
            int v = _data[_pos] | (_data[_pos + 1] << 8) | (_data[_pos + 2] << 16) | (_data[_pos + 3] << 24);
            _pos += 4;
            return v;
        }

        /// <summary>Reads an int64.</summary>
        public long ReadInt64(string field)
        {
            long low = (uint)ReadInt32(field);
            long high = ReadInt32(field);
            return (high << 32) | low;
        }

        /// <summary>Reads a float32.</summary>
        public float ReadFloat32(string field)
        {
            Require(4, field);
            float v = ProtoWireReader.ReadSingleLittleEndian(_data, _pos);
            _pos += 4;
            return v;
        }

        /// <summary>Reads an int32-length ASCII string.</summary>
        public string ReadString(string field)
        {
            int length = ReadInt32(field);
            if (length < 0) throw new FormatException(field + ": negative length");
            Require(length, field);
            string s = Encoding.ASCII.GetString(_data, _pos, length);
            _pos += length;
            return s;
        }

        /// <summary>Reads an int32-count list of float32.</summary>
        public float[] ReadFloatList(string field)
        {
            int count = ReadInt32(field);
            if (count < 0 || count > Remaining / 4) throw new FormatException(field + ": list of " + count + " floats runs past the end");
            var values = new float[count];
            for (int i = 0; i < count; i++) values[i] = ReadFloat32(field);
            return values;
        }

        /// <summary>Copies <paramref name="count"/> raw bytes.</summary>
        public byte[] ReadBytes(int count, string field)
        {
            Require(count, field);
            var bytes = new byte[count];
            Buffer.BlockCopy(_data, _pos, bytes, 0, count);
            _pos += count;
            return bytes;
        }

        private void Require(int count, string field)
        {
            if (count < 0 || Remaining < count) throw new FormatException("truncated record: " + field);
        }
    }

    /// <summary>Little-endian payload writer (the same types as <see cref="StrictPayloadReader"/>).</summary>
    public sealed class PayloadWriter
    {
        private readonly MemoryStream _stream = new MemoryStream();
        private readonly BinaryWriter _writer;

        /// <summary>Creates an empty payload.</summary>
        public PayloadWriter() { _writer = new BinaryWriter(_stream); }

        /// <summary>Appends an int32.</summary>
        public PayloadWriter Int32(int v) { _writer.Write(v); return this; }
        /// <summary>Appends an int64.</summary>
        public PayloadWriter Int64(long v) { _writer.Write(v); return this; }
        /// <summary>Appends a float32.</summary>
        public PayloadWriter Float32(float v) { _writer.Write(v); return this; }
        /// <summary>Appends raw bytes.</summary>
        public PayloadWriter Bytes(byte[] v) { _writer.Write(v); return this; }

        /// <summary>Appends an int32 length and the ASCII bytes of <paramref name="s"/>.</summary>
        public PayloadWriter String(string s)
        {
            var raw = Encoding.ASCII.GetBytes(s ?? "");
            _writer.Write(raw.Length);
            _writer.Write(raw);
            return this;
        }

        /// <summary>Appends an int32 count and the float32 values.</summary>
        public PayloadWriter FloatList(IList<float> values)
        {
            int count = values == null ? 0 : values.Count;
            _writer.Write(count);
            for (int i = 0; i < count; i++) _writer.Write(values[i]);
            return this;
        }

        /// <summary>The bytes written so far.</summary>
        public byte[] ToArray() { _writer.Flush(); return _stream.ToArray(); }
    }

    /// <summary>
    /// One TaskChannel record: int32 area (-1 = every area), string family ("" = clear), float list
    /// params (contract order), float list body (empty or omitted = default body).
    /// </summary>
    public sealed class TaskMessage
    {
        /// <summary>Area index, or -1 for every area of this environment.</summary>
        public int Area;
        /// <summary>Contract family name; empty clears the assignment.</summary>
        public string Family = "";
        /// <summary>The family's hidden parameters.</summary>
        public float[] Params = new float[0];
        /// <summary>top_speed, turn_rate, actuation_noise; empty = default body.</summary>
        public float[] Body = new float[0];

        /// <summary>Encodes the payload (python: side_channels.encode_task).</summary>
        public byte[] Encode() => new PayloadWriter().Int32(Area).String(Family).FloatList(Params).FloatList(Body).ToArray();

        /// <summary>Decodes a payload; throws <see cref="FormatException"/> if truncated or followed by extra bytes.</summary>
        public static TaskMessage Decode(byte[] payload)
        {
            var reader = new StrictPayloadReader(payload);
            var message = new TaskMessage
            {
                Area = reader.ReadInt32("area"),
                Family = reader.ReadString("family"),
                Params = reader.ReadFloatList("params"),
            };
            if (reader.Remaining > 0) message.Body = reader.ReadFloatList("body");
            if (reader.Remaining > 0) throw new FormatException(reader.Remaining + " unexpected trailing bytes");
            return message;
        }

        /// <summary>
        /// Validates against the contract: null clears the area; throws <see cref="ArgumentException"/>
        /// for an unknown family, a wrong count or a non-finite value (values out of range are clipped).
        /// </summary>
        public AvatarTask ToTask()
        {
            if (Family.Length == 0) return null;
            int index = AvatarTask.FamilyIndex(Family);
            if (index < 0) throw new ArgumentException("unknown family '" + (Family.Length > 64 ? Family.Substring(0, 64) + "..." : Family) + "'");
            return new AvatarTask((ScenarioFamily)index, Params, Body);
        }
    }

    /// <summary>PolicyChannel record kinds and limits (docs/exports.md).</summary>
    public static class PolicyChannelProtocol
    {
        /// <summary>CHUNK record (trainer -> world).</summary>
        public const int KindChunk = 1;
        /// <summary>ACK record (world -> trainer).</summary>
        public const int KindAck = 2;
        /// <summary>CHUNK header: 7 int32.</summary>
        public const int ChunkHeaderSize = 28;
        /// <summary>Flag bit 0: act in inference mode.</summary>
        public const int FlagInference = 1;
        /// <summary>Largest accepted policy, bytes.</summary>
        public const int MaxPolicyBytes = 64 * 1024 * 1024;
        /// <summary>At most this many unfinished transfers are kept.</summary>
        public const int MaxOpenTransfers = 8;

        /// <summary>ACK payload: int32 kind=2, area, transfer_id, status (0 accepted, 1 refused), int64 version, int32 length + ASCII reason (at most 1000 bytes).</summary>
        public static byte[] EncodeAck(int area, int transferId, bool accepted, ulong version, string reason)
        {
            var raw = Encoding.ASCII.GetBytes(reason ?? "");
            if (raw.Length > 1000) Array.Resize(ref raw, 1000);
            return new PayloadWriter().Int32(KindAck).Int32(area).Int32(transferId).Int32(accepted ? 0 : 1)
                .Int64(unchecked((long)version)).Int32(raw.Length).Bytes(raw).ToArray();
        }

        /// <summary>CHUNK payload (the trainer's side; used by tests and tools).</summary>
        public static byte[] EncodeChunk(int area, int transferId, int index, int count, int totalSize, int flags, byte[] chunk)
        {
            return new PayloadWriter().Int32(KindChunk).Int32(area).Int32(transferId).Int32(index).Int32(count)
                .Int32(totalSize).Int32(flags).Bytes(chunk ?? new byte[0]).ToArray();
        }
    }

    /// <summary>Result of feeding one CHUNK record to <see cref="PolicyTransferAssembler"/>.</summary>
    public enum ChunkResult
    {
        /// <summary>Not a CHUNK record or too short: logged and dropped, no ACK.</summary>
        Ignored,
        /// <summary>Stored; the transfer is not complete yet.</summary>
        Incomplete,
        /// <summary>All chunks arrived: <c>envelope</c> holds the bytes (not verified yet).</summary>
        Completed,
        /// <summary>The transfer is refused: send a refusal ACK with <c>reason</c>.</summary>
        Refused,
    }

    /// <summary>
    /// Reassembles chunked PolicyChannel transfers exactly like the headless world's
    /// PolicyReceiver: chunks in any order, keyed by (area, transfer id), at most
    /// <see cref="PolicyChannelProtocol.MaxOpenTransfers"/> open (the oldest is dropped).
    /// </summary>
    public sealed class PolicyTransferAssembler
    {
        private sealed class Transfer
        {
            public int Count, Total, Flags, Received;
            public byte[][] Chunks;
        }

        private readonly Dictionary<long, Transfer> _open = new Dictionary<long, Transfer>();
        private readonly List<long> _order = new List<long>();
        private readonly int _numAreas;

        /// <summary>Creates an assembler for an environment with <paramref name="numAreas"/> areas.</summary>
        public PolicyTransferAssembler(int numAreas) { _numAreas = numAreas; }

        /// <summary>Feeds one CHUNK payload.</summary>
        public ChunkResult Receive(byte[] payload, out int area, out int transferId, out int flags, out byte[] envelope, out string reason)
        {
            area = 0; transferId = 0; flags = 0; envelope = null; reason = "";
            if (payload == null || payload.Length < PolicyChannelProtocol.ChunkHeaderSize) { reason = "record too short"; return ChunkResult.Ignored; }
            var reader = new StrictPayloadReader(payload);
            int kind = reader.ReadInt32("kind");
            area = reader.ReadInt32("area");
            transferId = reader.ReadInt32("transfer_id");
            int index = reader.ReadInt32("chunk_index");
            int count = reader.ReadInt32("chunk_count");
            int total = reader.ReadInt32("total_size");
            flags = reader.ReadInt32("flags");
            if (kind != PolicyChannelProtocol.KindChunk) { reason = "unknown record kind " + kind; return ChunkResult.Ignored; }
            if (!(area == -1 || (area >= 0 && area < _numAreas))) { reason = "area " + area + " does not exist (0.." + (_numAreas - 1) + " or -1)"; return ChunkResult.Refused; }
            if (!(count > 0 && count <= 1 + total / 1024 + 1024) || index < 0 || index >= count) { reason = "bad chunk index " + index + " of " + count; return ChunkResult.Refused; }
            if (total < 0 || total > PolicyChannelProtocol.MaxPolicyBytes) { reason = "policy of " + total + " bytes exceeds the " + PolicyChannelProtocol.MaxPolicyBytes + "-byte limit"; return ChunkResult.Refused; }

            long key = ((long)area << 32) | (uint)transferId;
            if (!_open.TryGetValue(key, out var transfer))
            {
                if (_open.Count >= PolicyChannelProtocol.MaxOpenTransfers)
                {
                    _open.Remove(_order[0]);
                    _order.RemoveAt(0);
                }
                transfer = new Transfer { Count = count, Total = total, Flags = flags, Chunks = new byte[count][] };
                _open[key] = transfer;
                _order.Add(key);
            }
            if (transfer.Count != count || transfer.Total != total)
            {
                Forget(key);
                reason = "chunk headers of one transfer disagree";
                return ChunkResult.Refused;
            }
            if (transfer.Chunks[index] == null) transfer.Received++;
            transfer.Chunks[index] = reader.ReadBytes(reader.Remaining, "chunk");
            if (transfer.Received < transfer.Count) return ChunkResult.Incomplete;

            Forget(key);
            long size = 0;
            foreach (var chunk in transfer.Chunks) size += chunk.Length;
            if (size != transfer.Total) { reason = "got " + size + " of " + transfer.Total + " bytes"; return ChunkResult.Refused; }
            envelope = new byte[size];
            int offset = 0;
            foreach (var chunk in transfer.Chunks)
            {
                Buffer.BlockCopy(chunk, 0, envelope, offset, chunk.Length);
                offset += chunk.Length;
            }
            flags = transfer.Flags;
            return ChunkResult.Completed;
        }

        private void Forget(long key)
        {
            _open.Remove(key);
            _order.Remove(key);
        }
    }
}
