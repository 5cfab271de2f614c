using System;
using System.Collections.Generic;
using System.IO;
using System.Text;

namespace AvatarMeta
{
    /// <summary>
    /// A minimal protobuf (proto3) wire writer: varints, tags, length-delimited fields and packed
    /// float arrays. The adaptation client encodes its two small requests with it so the
    /// network-free part of the client (and its tests under plain mono) needs no Google.Protobuf.
    /// The generated messages in <c>Runtime/Proto</c> produce the same bytes.
    /// </summary>
    public sealed class ProtoWireWriter
    {
        private readonly MemoryStream _stream;

        /// <summary>Creates an empty writer.</summary>
        public ProtoWireWriter(int capacity = 256) { _stream = new MemoryStream(capacity); }

        /// <summary>Bytes written so far.</summary>
        public int Length => (int)_stream.Length;

        /// <summary>A copy of the bytes written.</summary>
        public byte[] ToArray() => _stream.ToArray();

        /// <summary>Writes a base-128 varint.</summary>
        public void WriteVarint(ulong value)
        {
            while (value >= 0x80)
            {
                _stream.WriteByte((byte)(value | 0x80));
                value >>= 7;
            }
            _stream.WriteByte((byte)value);
        }

        /// <summary>Writes a field key.</summary>
        public void WriteTag(int field, int wireType) => WriteVarint((ulong)(((uint)field << 3) | (uint)wireType));

        /// <summary>An int32 field (negative values take 10 bytes, as in protobuf); zero is omitted (proto3 default).</summary>
        public void WriteInt32Field(int field, int value)
        {
            if (value == 0) return;
            WriteTag(field, ProtoWireReader.WireVarint);
            WriteVarint(unchecked((ulong)(long)value));
        }

        /// <summary>A uint64 field; zero is omitted.</summary>
        public void WriteUInt64Field(int field, ulong value)
        {
            if (value == 0) return;
            WriteTag(field, ProtoWireReader.WireVarint);
            WriteVarint(value);
        }

        /// <summary>A bool field; false is omitted.</summary>
        public void WriteBoolField(int field, bool value)
        {
            if (!value) return;
            WriteTag(field, ProtoWireReader.WireVarint);
            WriteVarint(1);
        }

        /// <summary>A UTF-8 string field; null and empty are omitted.</summary>
        public void WriteStringField(int field, string value)
        {
            if (string.IsNullOrEmpty(value)) return;
            WriteBytesField(field, Encoding.UTF8.GetBytes(value), true);
        }

        /// <summary>A bytes (or embedded message) field; empty is omitted unless <paramref name="writeEmpty"/>.</summary>
        public void WriteBytesField(int field, byte[] value, bool writeEmpty = false)
        {
            if (value == null || (value.Length == 0 && !writeEmpty)) return;
            WriteTag(field, ProtoWireReader.WireLengthDelimited);
            WriteVarint((ulong)value.Length);
            _stream.Write(value, 0, value.Length);
        }

        /// <summary>A packed repeated float field (little-endian float32); empty is omitted.</summary>
        public void WritePackedFloats(int field, IList<float> values)
        {
            if (values == null || values.Count == 0) return;
            WriteTag(field, ProtoWireReader.WireLengthDelimited);
            WriteVarint((ulong)(4L * values.Count));
            var word = new byte[4];
            for (int i = 0; i < values.Count; i++)
            {
                uint bits = (uint)BitConverter.ToInt32(BitConverter.GetBytes(values[i]), 0);
                word[0] = (byte)bits; word[1] = (byte)(bits >> 8); word[2] = (byte)(bits >> 16); word[3] = (byte)(bits >> 24);
                _stream.Write(word, 0, 4);
            }
        }
    }

    /// <summary>
    /// Few-shot experience of one episode, recorded step by step, in the layout of
    /// <c>avatar_meta.v1.Episode</c> (flat row-major arrays; masks 1 = masked).
    /// </summary>
    public sealed class EpisodeRecorder
    {
        private readonly List<float> _obs = new List<float>();
        private readonly List<float> _continuous = new List<float>();
        private readonly List<float> _discrete = new List<float>();
        private readonly List<float> _masks = new List<float>();
        private readonly List<float> _rewards = new List<float>();

        /// <summary>Observation width (every step must have exactly this many values).</summary>
        public int ObservationSize { get; }
        /// <summary>Continuous actions per step.</summary>
        public int ContinuousSize { get; }
        /// <summary>Discrete branches per step.</summary>
        public int BranchCount { get; }
        /// <summary>Action-mask entries per step (0: no masks recorded).</summary>
        public int MaskSize { get; }
        /// <summary>Steps recorded.</summary>
        public int Steps => _rewards.Count;
        /// <summary>The episode ended by a step limit rather than a terminal state.</summary>
        public bool Interrupted { get; set; }

        /// <summary>A recorder for the avatar contract v1 layout.</summary>
        public static EpisodeRecorder ForAvatarContract() =>
            new EpisodeRecorder(AvatarContract.ObservationSize, AvatarContract.NumContinuousActions, AvatarContract.DiscreteBranches.Length, AvatarContract.DiscreteBranches[0]);

        /// <summary>Creates a recorder for the given layout.</summary>
        public EpisodeRecorder(int observationSize, int continuousSize, int branchCount, int maskSize)
        {
            if (observationSize <= 0) throw new ArgumentOutOfRangeException(nameof(observationSize));
            if (continuousSize < 0 || branchCount < 0 || maskSize < 0) throw new ArgumentOutOfRangeException(nameof(continuousSize));
            ObservationSize = observationSize;
            ContinuousSize = continuousSize;
            BranchCount = branchCount;
            MaskSize = maskSize;
        }

        /// <summary>
        /// Appends one decision: the observation the action was chosen on, the raw actions, the
        /// mask in force (true = masked; null when <see cref="MaskSize"/> is 0) and the reward that
        /// followed. Non-finite values are refused here rather than by the server.
        /// </summary>
        public void AddStep(float[] observation, float[] continuous, int[] discrete, bool[] actionMask, float reward)
        {
            Check(observation, ObservationSize, nameof(observation));
            Check(continuous, ContinuousSize, nameof(continuous));
            if ((discrete == null ? 0 : discrete.Length) < BranchCount) throw new ArgumentException("expected " + BranchCount + " discrete actions", nameof(discrete));
            if (MaskSize > 0 && (actionMask == null || actionMask.Length < MaskSize)) throw new ArgumentException("expected " + MaskSize + " mask entries", nameof(actionMask));
            if (float.IsNaN(reward) || float.IsInfinity(reward)) throw new ArgumentException("reward is not finite", nameof(reward));
            for (int i = 0; i < ObservationSize; i++) _obs.Add(observation[i]);
            for (int i = 0; i < ContinuousSize; i++) _continuous.Add(continuous[i]);
            for (int i = 0; i < BranchCount; i++) _discrete.Add(discrete[i]);
            for (int i = 0; i < MaskSize; i++) _masks.Add(actionMask[i] ? 1f : 0f);
            _rewards.Add(reward);
        }

        /// <summary>Forgets every step.</summary>
        public void Clear()
        {
            _obs.Clear(); _continuous.Clear(); _discrete.Clear(); _masks.Clear(); _rewards.Clear();
            Interrupted = false;
        }

        /// <summary>The serialised <c>Episode</c> message; <c>dones</c> is 1 at the last step only.</summary>
        public byte[] Encode()
        {
            if (Steps == 0) throw new InvalidOperationException("an episode needs at least one step");
            var dones = new float[Steps];
            dones[Steps - 1] = 1f;
            var w = new ProtoWireWriter(64 + 4 * (_obs.Count + _continuous.Count + _discrete.Count + _masks.Count + 2 * Steps));
            w.WriteInt32Field(1, Steps);
            w.WriteInt32Field(2, ObservationSize);
            w.WritePackedFloats(3, _obs);
            w.WriteInt32Field(4, ContinuousSize);
            w.WritePackedFloats(5, _continuous);
            w.WriteInt32Field(6, BranchCount);
            w.WritePackedFloats(7, _discrete);
            w.WriteInt32Field(8, MaskSize);
            w.WritePackedFloats(9, _masks);
            w.WritePackedFloats(10, _rewards);
            w.WritePackedFloats(11, dones);
            w.WriteBoolField(12, Interrupted);
            return w.ToArray();
        }

        private static void Check(float[] values, int expected, string name)
        {
            if ((values == null ? 0 : values.Length) < expected) throw new ArgumentException("expected " + expected + " values", name);
            for (int i = 0; i < expected; i++)
                if (float.IsNaN(values[i]) || float.IsInfinity(values[i])) throw new ArgumentException(name + "[" + i + "] is not finite", name);
        }
    }

    /// <summary>What an <c>AdaptResponse</c> carries, read without re-serialising anything.</summary>
    public sealed class AdaptResponseData
    {
        /// <summary>The <c>PolicyWeightsEnvelope</c> bytes exactly as received (verify these).</summary>
        public byte[] Envelope;
        /// <summary>Sentis ONNX with the adapted weights, when the request set want_onnx (else empty).</summary>
        public byte[] Onnx = new byte[0];
        /// <summary>Server-side adaptation time.</summary>
        public double AdaptMs;
    }

    /// <summary>Encoders and decoders for the adaptation service's messages (protos/avatar_meta/v1/adaptation_service.proto).</summary>
    public static class AdaptationWire
    {
        /// <summary>A serialised <c>SubscribeRequest</c>.</summary>
        public static byte[] EncodeSubscribeRequest(string behaviorName, string taskId, ulong afterVersion)
        {
            var w = new ProtoWireWriter(64);
            w.WriteStringField(1, behaviorName);
            w.WriteStringField(2, taskId);
            w.WriteUInt64Field(3, afterVersion);
            return w.ToArray();
        }

        /// <summary>A serialised <c>AdaptRequest</c> from serialised <c>Episode</c>s (<see cref="EpisodeRecorder.Encode"/>).</summary>
        public static byte[] EncodeAdaptRequest(string behaviorName, string taskHint, IList<byte[]> episodes, bool wantOnnx = false, ulong seed = 0)
        {
            if (episodes == null || episodes.Count == 0) throw new ArgumentException("at least one episode is needed", nameof(episodes));
            var w = new ProtoWireWriter(1024);
            w.WriteStringField(1, behaviorName);
            w.WriteStringField(2, taskHint);
            for (int i = 0; i < episodes.Count; i++) w.WriteBytesField(3, episodes[i], true);
            w.WriteBoolField(4, wantOnnx);
            w.WriteUInt64Field(5, seed);
            return w.ToArray();
        }

        /// <summary>Reads an <c>AdaptResponse</c>; throws <see cref="FormatException"/> when malformed or without weights.</summary>
        public static AdaptResponseData DecodeAdaptResponse(byte[] response)
        {
            if (response == null) throw new ArgumentNullException(nameof(response));
            var result = new AdaptResponseData();
            var reader = new ProtoWireReader(response, 0, response.Length);
            while (reader.HasMore)
            {
                int field = reader.ReadTag(out int wire);
                if (field == 1 && wire == ProtoWireReader.WireLengthDelimited) result.Envelope = reader.ReadBytes();
                else if (field == 2 && wire == ProtoWireReader.WireLengthDelimited) result.Onnx = reader.ReadBytes();
                else if (field == 3 && wire == ProtoWireReader.WireFixed64) result.AdaptMs = reader.ReadDouble();
                else reader.SkipField(wire);
            }
            if (result.Envelope == null) throw new FormatException("AdaptResponse has no weights");
            return result;
        }
    }
}
