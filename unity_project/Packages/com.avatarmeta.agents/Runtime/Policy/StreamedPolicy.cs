using System;
using System.Threading;

namespace AvatarMeta
{
    /// <summary>
    /// The actor of one PolicyWeights version, unpacked into double-precision arrays with
    /// preallocated scratch buffers: <see cref="Evaluate"/> allocates nothing.
    /// </summary>
    /// <remarks>
    /// Mirrors python/avatar_meta/export/reference_eval.py step by step:
    /// z = clamp((obs - mean) / sqrt(var + epsilon), -clip, clip); h = act(W h + b) per hidden
    /// layer; continuous = clamp(W_mu h + b_mu, -1, 1); logits = W_l h + b_l with masked entries
    /// (true = masked) set to -1e8, first argmax per branch. Double arithmetic on float32 weights.
    /// Not thread-safe: one instance evaluates on one thread at a time.
    /// </remarks>
    public sealed class PolicyNetwork
    {
        /// <summary>Logit given to masked choices (same constant as the trainer).</summary>
        public const double MaskedLogit = -1e8;

        private readonly double[][] _layerWeights;
        private readonly double[][] _layerBiases;
        private readonly int[] _layerWidths;
        private readonly bool _relu;
        private readonly double[] _muWeights;
        private readonly double[] _muBias;
        private readonly double[] _logitWeights;
        private readonly double[] _logitBias;
        private readonly int[] _branches;
        private readonly double[] _normMean;
        private readonly double[] _normInvStd;
        private readonly double _normClip;
        private readonly double[] _bufferA;
        private readonly double[] _bufferB;
        private readonly double[] _logits;

        /// <summary>Observation length the network expects.</summary>
        public int ObservationSize { get; }
        /// <summary>Continuous outputs per decision.</summary>
        public int ContinuousSize { get; }
        /// <summary>Total discrete choices over all branches (the action-mask length).</summary>
        public int MaskSize { get; }
        /// <summary>Number of discrete branches.</summary>
        public int BranchCount => _branches.Length;
        /// <summary>PolicyWeights.policy_version.</summary>
        public ulong Version { get; }
        /// <summary>PolicyWeights.task_id.</summary>
        public string TaskId { get; }

        /// <summary>Builds the network; throws <see cref="FormatException"/> if the message is inconsistent.</summary>
        public PolicyNetwork(PolicyWeightsData data)
        {
            if (data == null) throw new ArgumentNullException(nameof(data));
            if (data.ParameterOrder != PolicyWeightsData.SupportedParameterOrder)
                throw new FormatException("unsupported parameter_order '" + data.ParameterOrder + "'");
            if (data.Activation != PolicyActivation.Tanh && data.Activation != PolicyActivation.Relu)
                throw new FormatException("unsupported activation " + (int)data.Activation);
            if (data.ContinuousOutput != PolicyWeightsData.ContinuousOutputClipUnit)
                throw new FormatException("unsupported continuous_output " + data.ContinuousOutput);
            if (data.ObsSize <= 0 || data.Hidden.Length == 0) throw new FormatException("descriptor needs obs_size > 0 and hidden layers");
            if (data.NumContinuous < 0) throw new FormatException("negative num_continuous");
            if (data.Weights.Length % 4 != 0) throw new FormatException("weights are not a whole number of float32");

            ObservationSize = data.ObsSize;
            ContinuousSize = data.NumContinuous;
            Version = data.PolicyVersion;
            TaskId = data.TaskId;
            _relu = data.Activation == PolicyActivation.Relu;
            _branches = (int[])data.DiscreteBranches.Clone();
            int maskSize = 0;
            foreach (int b in _branches)
            {
                if (b <= 0) throw new FormatException("discrete branch sizes must be positive");
                maskSize += b;
            }
            MaskSize = maskSize;

            var cursor = new WeightCursor(data.Weights);
            int width = data.ObsSize, maxWidth = data.ObsSize;
            _layerWeights = new double[data.Hidden.Length][];
            _layerBiases = new double[data.Hidden.Length][];
            _layerWidths = new int[data.Hidden.Length];
            for (int i = 0; i < data.Hidden.Length; i++)
            {
                int h = data.Hidden[i];
                if (h <= 0) throw new FormatException("hidden widths must be positive");
                _layerWeights[i] = cursor.Take(checked(h * width));
                _layerBiases[i] = cursor.Take(h);
                _layerWidths[i] = h;
                width = h;
                if (h > maxWidth) maxWidth = h;
            }
            _muWeights = cursor.Take(checked(ContinuousSize * width));
            _muBias = cursor.Take(ContinuousSize);
            cursor.Take(ContinuousSize); // raw log-std: only sampling needs it
            _logitWeights = cursor.Take(checked(maskSize * width));
            _logitBias = cursor.Take(maskSize);

            if (data.NormalizationEnabled)
            {
                if (data.NormMean.Length != ObservationSize || data.NormVar.Length != ObservationSize)
                    throw new FormatException("normalization mean/var must have obs_size entries");
                _normMean = new double[ObservationSize];
                _normInvStd = new double[ObservationSize];
                for (int i = 0; i < ObservationSize; i++)
                {
                    _normMean[i] = data.NormMean[i];
                    _normInvStd[i] = 1.0 / Math.Sqrt(data.NormVar[i] + data.NormEpsilon);
                }
                _normClip = data.NormClip;
            }

            _bufferA = new double[maxWidth];
            _bufferB = new double[maxWidth];
            _logits = new double[Math.Max(1, maskSize)];
        }

        /// <summary>
        /// Deterministic action for one observation. Allocation-free.
        /// </summary>
        /// <param name="observation">At least <see cref="ObservationSize"/> floats (extra entries are ignored).</param>
        /// <param name="actionMask">Null, or <see cref="MaskSize"/> flags, true = masked (ML-Agents convention).</param>
        /// <param name="continuous">Receives <see cref="ContinuousSize"/> values in [-1, 1].</param>
        /// <param name="discrete">Receives one choice index per branch.</param>
        public void Evaluate(float[] observation, bool[] actionMask, float[] continuous, int[] discrete)
        {
            if (observation == null || observation.Length < ObservationSize) throw new ArgumentException("observation too short", nameof(observation));
            if (continuous == null || continuous.Length < ContinuousSize) throw new ArgumentException("continuous buffer too short", nameof(continuous));
            if (discrete == null || discrete.Length < _branches.Length) throw new ArgumentException("discrete buffer too short", nameof(discrete));
            if (actionMask != null && actionMask.Length < MaskSize) throw new ArgumentException("action mask too short", nameof(actionMask));

            double[] input = _bufferA, output = _bufferB;
            for (int i = 0; i < ObservationSize; i++)
            {
                double x = observation[i];
                if (_normMean != null)
                {
                    x = (x - _normMean[i]) * _normInvStd[i];
                    if (x < -_normClip) x = -_normClip; else if (x > _normClip) x = _normClip;
                }
                input[i] = x;
            }

            int width = ObservationSize;
            for (int layer = 0; layer < _layerWeights.Length; layer++)
            {
                int outWidth = _layerWidths[layer];
                Affine(_layerWeights[layer], _layerBiases[layer], input, width, output, outWidth);
                for (int j = 0; j < outWidth; j++)
                {
                    double v = output[j];
                    output[j] = _relu ? (v > 0.0 ? v : 0.0) : Math.Tanh(v);
                }
                var swap = input; input = output; output = swap;
                width = outWidth;
            }

            Affine(_muWeights, _muBias, input, width, output, ContinuousSize);
            for (int c = 0; c < ContinuousSize; c++)
            {
                double v = output[c];
                continuous[c] = (float)(v < -1.0 ? -1.0 : (v > 1.0 ? 1.0 : v));
            }

            Affine(_logitWeights, _logitBias, input, width, _logits, MaskSize);
            int start = 0;
            for (int b = 0; b < _branches.Length; b++)
            {
                int best = 0;
                double bestValue = double.NegativeInfinity;
                for (int k = 0; k < _branches[b]; k++)
                {
                    double v = actionMask != null && actionMask[start + k] ? MaskedLogit : _logits[start + k];
                    if (v > bestValue) { bestValue = v; best = k; }
                }
                discrete[b] = best;
                start += _branches[b];
            }
        }

        private static void Affine(double[] weights, double[] bias, double[] input, int inWidth, double[] output, int outWidth)
        {
            for (int row = 0; row < outWidth; row++)
            {
                double sum = 0.0;
                int offset = row * inWidth;
                for (int col = 0; col < inWidth; col++) sum += weights[offset + col] * input[col];
                output[row] = sum + bias[row];
            }
        }

        private struct WeightCursor
        {
            private readonly byte[] _bytes;
            private int _offset;

            public WeightCursor(byte[] bytes) { _bytes = bytes; _offset = 0; }

            public double[] Take(int count)
            {
                if (count < 0 || (long)_offset + 4L * count > _bytes.Length)
                    throw new FormatException("weights end after " + (_bytes.Length / 4) + " floats; need more");
                var values = new double[count];
                for (int i = 0; i < count; i++) values[i] = ProtoWireReader.ReadSingleLittleEndian(_bytes, _offset + 4 * i);
                _offset += 4 * count;
                return values;
            }
        }
    }

    /// <summary>
    /// A policy whose weights can be replaced while it runs: the pure-C# evaluator of signed
    /// PolicyWeights used by <c>AvatarAgent</c> in adapted mode.
    /// </summary>
    /// <remarks>
    /// <para><see cref="Load"/>/<see cref="Stage"/> may be called from any thread (a network
    /// client, the PolicyChannel); the new version is picked up atomically at the start of the
    /// next <see cref="Decide"/>, so versions swap between decisions, never inside one, and the
    /// episode continues.</para>
    /// <para><see cref="Decide"/> must be called from one thread (the main thread) and
    /// allocates nothing.</para>
    /// </remarks>
    public sealed class StreamedPolicy
    {
        private readonly int _expectedObservationSize;
        private PolicyNetwork _active;
        private PolicyNetwork _pending;

        /// <summary>Creates an empty policy; <paramref name="expectedObservationSize"/> &lt;= 0 accepts any size.</summary>
        public StreamedPolicy(int expectedObservationSize = AvatarContract.ObservationSize)
        {
            _expectedObservationSize = expectedObservationSize;
        }

        /// <summary>The network used by the last decision (null before the first version).</summary>
        public PolicyNetwork Active => _active;

        /// <summary>Version of the network used by the last decision, 0 when none.</summary>
        public ulong ActiveVersion => _active != null ? _active.Version : 0UL;

        /// <summary>True once a verified version is active or waiting for the next decision.</summary>
        public bool HasPolicy => _active != null || Volatile.Read(ref _pending) != null;

        /// <summary>Raised (on the deciding thread) when a new version becomes active.</summary>
        public event Action<PolicyNetwork> VersionActivated;

        /// <summary>
        /// Verifies <paramref name="envelopeBytes"/> with <paramref name="trustedKey"/>, builds the
        /// network and stages it for the next decision. Throws <see cref="PolicyVerificationException"/>
        /// when refused; the running version is untouched in that case.
        /// </summary>
        public PolicyNetwork Load(byte[] envelopeBytes, PolicyPublicKey trustedKey)
        {
            var data = SignedPolicyLoader.Open(envelopeBytes, trustedKey);
            PolicyNetwork network;
            try
            {
                network = new PolicyNetwork(data);
            }
            catch (FormatException err)
            {
                throw new PolicyVerificationException("inconsistent PolicyWeights: " + err.Message);
            }
            Stage(network);
            return network;
        }

        /// <summary>Stages an already-built network for the next decision (thread-safe).</summary>
        public void Stage(PolicyNetwork network)
        {
            if (network == null) throw new ArgumentNullException(nameof(network));
            if (_expectedObservationSize > 0 && network.ObservationSize != _expectedObservationSize)
                throw new PolicyVerificationException("policy expects " + network.ObservationSize + " observations, this agent has " + _expectedObservationSize);
            Interlocked.Exchange(ref _pending, network);
        }

        /// <summary>
        /// Swaps in a staged version if any, then computes the deterministic action. Returns false
        /// (and leaves the outputs untouched) when no policy has been loaded yet.
        /// </summary>
        public bool Decide(float[] observation, bool[] actionMask, float[] continuous, int[] discrete)
        {
            var staged = Interlocked.Exchange(ref _pending, null);
            if (staged != null)
            {
                _active = staged;
                VersionActivated?.Invoke(staged);
            }
            if (_active == null) return false;
            _active.Evaluate(observation, actionMask, continuous, discrete);
            return true;
        }
    }
}
