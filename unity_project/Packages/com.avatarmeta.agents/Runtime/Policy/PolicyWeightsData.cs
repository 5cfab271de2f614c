using System;
using System.Collections.Generic;

namespace AvatarMeta
{
    /// <summary>Hidden-layer activation, same numbers as <c>avatar_meta.v1.Activation</c>.</summary>
    public enum PolicyActivation
    {
        /// <summary>Not set: refused.</summary>
        Unspecified = 0,
        /// <summary>Hyperbolic tangent.</summary>
        Tanh = 1,
        /// <summary>Rectified linear unit.</summary>
        Relu = 2,
    }

    /// <summary>
    /// The fields of a verified <c>avatar_meta.v1.PolicyWeights</c> message that evaluation needs,
    /// decoded with <see cref="ProtoWireReader"/> (see docs/exports.md for the layout).
    /// </summary>
    /// <remarks>
    /// Field numbers follow protos/avatar_meta/v1/policy_weights.proto. Only call
    /// <see cref="Parse"/> on payload bytes whose signature was verified first
    /// (<see cref="SignedPolicyLoader"/> does this).
    /// </remarks>
    public sealed class PolicyWeightsData
    {
        /// <summary>The only flat-weight order this evaluator understands.</summary>
        public const string SupportedParameterOrder = "mlp-actor-critic-v1";
        /// <summary><c>CONTINUOUS_OUTPUT_CLIP_UNIT</c>: deterministic continuous = clamp(mean, -1, 1).</summary>
        public const int ContinuousOutputClipUnit = 1;

        /// <summary>Avatar contract version (AvatarContract.Version, "v2" today).</summary>
        public string ContractVersion = "";
        /// <summary>Observation vector length.</summary>
        public int ObsSize;
        /// <summary>Hidden-layer widths, input to output.</summary>
        public int[] Hidden = new int[0];
        /// <summary>Hidden-layer activation.</summary>
        public PolicyActivation Activation;
        /// <summary>Whether observations are normalised.</summary>
        public bool NormalizationEnabled;
        /// <summary>Running mean per observation (float32 as sent).</summary>
        public float[] NormMean = new float[0];
        /// <summary>Running variance per observation (float32 as sent).</summary>
        public float[] NormVar = new float[0];
        /// <summary>Normalised observations are clamped to [-clip, clip].</summary>
        public double NormClip;
        /// <summary>Added to the variance before the square root.</summary>
        public double NormEpsilon;
        /// <summary>Continuous action count.</summary>
        public int NumContinuous;
        /// <summary>Choices per discrete branch.</summary>
        public int[] DiscreteBranches = new int[0];
        /// <summary>Continuous output convention (<see cref="ContinuousOutputClipUnit"/> supported).</summary>
        public int ContinuousOutput;
        /// <summary>Flat weight order name.</summary>
        public string ParameterOrder = "";
        /// <summary>Whether the critic follows the actor in <see cref="Weights"/>.</summary>
        public bool HasCritic;
        /// <summary>Little-endian float32 weights (actor first).</summary>
        public byte[] Weights = new byte[0];
        /// <summary>Monotonic version number set by the trainer/service.</summary>
        public ulong PolicyVersion;
        /// <summary>Task the policy was adapted to.</summary>
        public string TaskId = "";
        /// <summary>Creation time, Unix milliseconds.</summary>
        public long CreatedAtUnixMs;
        /// <summary>ML-Agents behaviour name.</summary>
        public string BehaviorName = "";

        /// <summary>Decodes a serialised PolicyWeights message.</summary>
        /// <exception cref="FormatException">The bytes are not a valid message.</exception>
        public static PolicyWeightsData Parse(byte[] payload)
        {
            if (payload == null) throw new ArgumentNullException(nameof(payload));
            var data = new PolicyWeightsData();
            var reader = new ProtoWireReader(payload, 0, payload.Length);
            while (reader.HasMore)
            {
                int field = reader.ReadTag(out int wire);
                switch ((field << 3) | wire)
                {
                    case (1 << 3) | ProtoWireReader.WireLengthDelimited:
                        reader.ReadLengthDelimited(out int off, out int len);
                        data.ParseDescriptor(new ProtoWireReader(payload, off, len));
                        break;
                    case (2 << 3) | ProtoWireReader.WireLengthDelimited: data.Weights = reader.ReadBytes(); break;
                    case (3 << 3) | ProtoWireReader.WireVarint: data.PolicyVersion = reader.ReadVarint(); break;
                    case (4 << 3) | ProtoWireReader.WireLengthDelimited: data.TaskId = reader.ReadString(); break;
                    case (5 << 3) | ProtoWireReader.WireVarint: data.CreatedAtUnixMs = unchecked((long)reader.ReadVarint()); break;
                    case (6 << 3) | ProtoWireReader.WireLengthDelimited: data.BehaviorName = reader.ReadString(); break;
                    default: reader.SkipField(wire); break;
                }
            }
            return data;
        }

        private void ParseDescriptor(ProtoWireReader reader)
        {
            var hidden = new List<int>();
            while (reader.HasMore)
            {
                int field = reader.ReadTag(out int wire);
                switch ((field << 3) | wire)
                {
                    case (1 << 3) | ProtoWireReader.WireLengthDelimited: ContractVersion = reader.ReadString(); break;
                    case (2 << 3) | ProtoWireReader.WireVarint: ObsSize = reader.ReadInt32(); break;
                    case (3 << 3) | ProtoWireReader.WireVarint:
                    case (3 << 3) | ProtoWireReader.WireLengthDelimited:
                        ReadInt32s(ref reader, wire, hidden); break;
                    case (4 << 3) | ProtoWireReader.WireVarint: Activation = (PolicyActivation)reader.ReadInt32(); break;
                    case (5 << 3) | ProtoWireReader.WireLengthDelimited:
                        reader.ReadLengthDelimited(out int nOff, out int nLen);
                        ParseNormalization(new ProtoWireReader(reader.Buffer, nOff, nLen));
                        break;
                    case (6 << 3) | ProtoWireReader.WireLengthDelimited:
                        reader.ReadLengthDelimited(out int aOff, out int aLen);
                        ParseActionSpec(new ProtoWireReader(reader.Buffer, aOff, aLen));
                        break;
                    case (7 << 3) | ProtoWireReader.WireLengthDelimited: ParameterOrder = reader.ReadString(); break;
                    case (8 << 3) | ProtoWireReader.WireVarint: HasCritic = reader.ReadVarint() != 0; break;
                    default: reader.SkipField(wire); break;
                }
            }
            Hidden = hidden.ToArray();
        }

        private void ParseNormalization(ProtoWireReader reader)
        {
            var mean = new List<float>();
            var variance = new List<float>();
            while (reader.HasMore)
            {
                int field = reader.ReadTag(out int wire);
                switch ((field << 3) | wire)
                {
                    case (1 << 3) | ProtoWireReader.WireVarint: NormalizationEnabled = reader.ReadVarint() != 0; break;
                    case (2 << 3) | ProtoWireReader.WireFixed32:
                    case (2 << 3) | ProtoWireReader.WireLengthDelimited:
                        ReadFloats(ref reader, wire, mean); break;
                    case (3 << 3) | ProtoWireReader.WireFixed32:
                    case (3 << 3) | ProtoWireReader.WireLengthDelimited:
                        ReadFloats(ref reader, wire, variance); break;
                    case (4 << 3) | ProtoWireReader.WireFixed64: NormClip = reader.ReadDouble(); break;
                    case (5 << 3) | ProtoWireReader.WireFixed64: NormEpsilon = reader.ReadDouble(); break;
                    default: reader.SkipField(wire); break;
                }
            }
            NormMean = mean.ToArray();
            NormVar = variance.ToArray();
        }

        private void ParseActionSpec(ProtoWireReader reader)
        {
            var branches = new List<int>();
            while (reader.HasMore)
            {
                int field = reader.ReadTag(out int wire);
                switch ((field << 3) | wire)
                {
                    case (1 << 3) | ProtoWireReader.WireVarint: NumContinuous = reader.ReadInt32(); break;
                    case (2 << 3) | ProtoWireReader.WireVarint:
                    case (2 << 3) | ProtoWireReader.WireLengthDelimited:
                        ReadInt32s(ref reader, wire, branches); break;
                    case (3 << 3) | ProtoWireReader.WireVarint: ContinuousOutput = reader.ReadInt32(); break;
                    default: reader.SkipField(wire); break;
                }
            }
            DiscreteBranches = branches.ToArray();
        }

        private static void ReadInt32s(ref ProtoWireReader reader, int wire, List<int> into)
        {
            if (wire == ProtoWireReader.WireVarint) { into.Add(reader.ReadInt32()); return; }
            if (wire != ProtoWireReader.WireLengthDelimited) { reader.SkipField(wire); return; }
            reader.ReadLengthDelimited(out int off, out int len);
            var packed = new ProtoWireReader(reader.Buffer, off, len);
            while (packed.HasMore) into.Add(packed.ReadInt32());
        }

        private static void ReadFloats(ref ProtoWireReader reader, int wire, List<float> into)
        {
            if (wire == ProtoWireReader.WireFixed32) { into.Add(reader.ReadFloat()); return; }
            if (wire != ProtoWireReader.WireLengthDelimited) { reader.SkipField(wire); return; }
            reader.ReadLengthDelimited(out int off, out int len);
            if (len % 4 != 0) throw new FormatException("protobuf: packed float field is not a multiple of 4 bytes");
            var buffer = reader.Buffer;
            for (int i = 0; i < len; i += 4) into.Add(ProtoWireReader.ReadSingleLittleEndian(buffer, off + i));
        }
    }
}
