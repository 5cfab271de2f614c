using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;
using UnityEngine;

namespace AvatarMeta
{
    /// <summary>
    /// Connects the scene to an adaptation service (<c>avatar-meta serve</c>): subscribes to new
    /// policy versions for its behaviour/task and hot-swaps every verified one into the streamed
    /// policy of its area(s), exactly like a PolicyChannel push (the new version takes over at the
    /// next decision, the episode goes on). <see cref="Adapt"/> sends few-shot experience and
    /// stages the adapted answer the same way.
    /// </summary>
    /// <remarks>
    /// <para>Networking and signature checks run on thread-pool tasks
    /// (<see cref="AdaptationClient"/>); this component only drains the client's event queue in
    /// <c>Update</c> and stages the policies on the main thread, so the game never waits on the
    /// network. Policies are verified with the <see cref="AvatarEnvironment"/>'s trusted key
    /// (a separate instance of it, since verification happens off the main thread).</para>
    /// <para>The token: set it from code with <see cref="SetToken"/> before enabling, or put it in
    /// the environment variable named by <i>Token Environment Variable</i>. Do not commit tokens
    /// into scenes.</para>
    /// <para>Grpc.Core runs in the Editor and in Windows/macOS/Linux players only; elsewhere this
    /// component logs that and stays idle.</para>
    /// </remarks>
    [AddComponentMenu("avatar-meta/Avatar Adaptation Client")]
    public sealed class AvatarAdaptationClient : MonoBehaviour
    {
        [Tooltip("Service address, host:port (avatar-meta serve prints it).")]
        [SerializeField] private string address = "127.0.0.1:50061";

        [Tooltip("TLS. Required for any address that is not loopback.")]
        [SerializeField] private bool useTls;

        [Tooltip("Optional PEM root certificate(s) for TLS (e.g. a self-signed server certificate as a TextAsset); empty uses gRPC's default roots.")]
        [SerializeField] private TextAsset rootCertificates;

        [Tooltip("Environment variable holding the bearer token (read on enable, unless SetToken was called).")]
        [SerializeField] private string tokenEnvironmentVariable = "AVATAR_META_TOKEN";

        [Tooltip("Behaviour name sent to the service.")]
        [SerializeField] private string behaviorName = AvatarContract.BehaviorName;

        [Tooltip("Task to subscribe to (empty: every task of the behaviour).")]
        [SerializeField] private string taskId = "";

        [Tooltip("Area receiving the policies (-1: every area).")]
        [SerializeField] private int areaIndex = -1;

        [Tooltip("Subscribe when the component is enabled.")]
        [SerializeField] private bool subscribeOnEnable = true;

        [Tooltip("Avatars in Auto mode act with received policies even while a trainer is connected.")]
        [SerializeField] private bool actWhileTrainerConnected;

        [Tooltip("Deadline of each Adapt call, seconds.")]
        [SerializeField] private float adaptDeadlineSeconds = 30f;

        [Tooltip("Lifetime of one Subscribe stream, seconds; it is then renewed (detects dead connections).")]
        [SerializeField] private float streamLifetimeSeconds = 600f;

        [Tooltip("Largest reconnect delay, seconds (the first is 1 s, growing 1.6x with +-20% jitter).")]
        [SerializeField] private float maxBackoffSeconds = 30f;

        private static readonly List<AvatarAdaptationClient> s_Enabled = new List<AvatarAdaptationClient>();
        private AdaptationClient _client;
        private PolicyPublicKey _key;
        private string _token;
        private string _status = "disabled";
        private AdaptationResult _lastAdapt;

        /// <summary>Enabled adaptation clients (for the Editor window).</summary>
        public static IReadOnlyList<AvatarAdaptationClient> Enabled => s_Enabled;
        /// <summary>The running client (null while disabled or when it could not start).</summary>
        public AdaptationClient Client => _client;
        /// <summary>Short human-readable state for monitors.</summary>
        public string Status => _client != null ? _client.State + (_client.LastError.Length > 0 ? " (" + _client.LastError + ")" : "") + ", latest v" + _client.LatestVersion : _status;
        /// <summary>The last verified Adapt answer (its <see cref="AdaptationResult.Onnx"/> holds the ONNX when asked for).</summary>
        public AdaptationResult LastAdaptResult => _lastAdapt;
        /// <summary>Raised on the main thread for every client event, after the component handled it.</summary>
        public event Action<AdaptationEvent> EventReceived;

        /// <summary>Sets the bearer token (takes effect on the next enable).</summary>
        public void SetToken(string token) => _token = token;

        private void OnEnable()
        {
            if (!s_Enabled.Contains(this)) s_Enabled.Add(this);
            if (!GrpcAdaptationTransport.IsSupported)
            {
                _status = "unsupported platform";
                Debug.LogError("avatar-meta: the adaptation client needs Grpc.Core, which runs in the Editor and Windows/macOS/Linux players only", this);
                return;
            }
            var environment = AvatarEnvironment.Active;
            string pem = environment != null ? environment.TrustedKeyPem : null;
            if (string.IsNullOrEmpty(pem))
            {
                _status = "no trusted key";
                Debug.LogError("avatar-meta: AvatarAdaptationClient needs an AvatarEnvironment with a Policy Public Key; every policy would be refused", this);
                return;
            }
            var options = new AdaptationClientOptions
            {
                Address = address,
                UseTls = useTls,
                RootCertificatesPem = rootCertificates != null ? rootCertificates.text : null,
                Token = _token ?? ReadTokenFromEnvironment(),
                BehaviorName = behaviorName,
                AdaptDeadline = TimeSpan.FromSeconds(Math.Max(0.1f, adaptDeadlineSeconds)),
                SubscribeStreamLifetime = TimeSpan.FromSeconds(Math.Max(1f, streamLifetimeSeconds)),
                BackoffMax = TimeSpan.FromSeconds(Math.Max(1f, maxBackoffSeconds)),
            };
            try
            {
                _key = PolicyPublicKey.FromPem(pem);
                _client = new AdaptationClient(new GrpcAdaptationTransport(options), options, _key);
            }
            catch (Exception err) when (err is ArgumentException || err is FormatException || err is PlatformNotSupportedException)
            {
                _status = "not started: " + err.Message;
                Debug.LogError("avatar-meta: adaptation client not started: " + err.Message, this);
                _key?.Dispose();
                _key = null;
                return;
            }
            if (string.IsNullOrEmpty(options.Token)) Debug.LogWarning("avatar-meta: adaptation client has no token; a server started with --token-file will answer UNAUTHENTICATED", this);
            if (subscribeOnEnable) _client.StartSubscription(taskId);
        }

        private void OnDisable()
        {
            s_Enabled.Remove(this);
            if (_client != null)
            {
                _client.Dispose(); // cancels calls and shuts the channel down without waiting
                _client = null;
            }
            _key?.Dispose();
            _key = null;
            _status = "disabled";
        }

        private void Update()
        {
            if (_client == null) return;
            _client.Events.Drain(Handle, 16);
        }

        /// <summary>(Re)starts the subscription, e.g. for another task.</summary>
        public void Subscribe(string task)
        {
            taskId = task ?? "";
            if (_client != null) _client.StartSubscription(taskId);
        }

        /// <summary>
        /// Sends recorded episodes (<see cref="EpisodeRecorder.Encode"/>) for adaptation. The
        /// verified answer is staged on the area(s) in <c>Update</c>; the returned task is for
        /// callers that want the result (do not block on it from the main thread).
        /// </summary>
        public Task<AdaptationResult> Adapt(IList<byte[]> episodes, string taskHint = "", bool wantOnnx = false)
        {
            if (_client == null) throw new InvalidOperationException("the adaptation client is not running (" + _status + ")");
            return _client.AdaptAsync(AdaptationWire.EncodeAdaptRequest(behaviorName, taskHint, episodes, wantOnnx));
        }

        private void Handle(AdaptationEvent e)
        {
            switch (e.Kind)
            {
                case AdaptationEventKind.PolicyReceived:
                    Stage(e.Network, "subscription");
                    break;
                case AdaptationEventKind.AdaptCompleted:
                    _lastAdapt = e.Result;
                    Stage(e.Network, "adapt (" + e.Result.AdaptMs.ToString("F1") + " ms on the server)");
                    break;
                case AdaptationEventKind.PolicyRejected:
                    Debug.LogWarning("avatar-meta: refused a policy from the adaptation service: " + e.Message, this);
                    break;
                case AdaptationEventKind.AdaptFailed:
                    Debug.LogWarning("avatar-meta: Adapt failed: " + e.Status + " " + e.Message, this);
                    break;
                case AdaptationEventKind.SubscriptionRetrying:
                    Debug.Log("avatar-meta: subscription lost (" + e.Status + ": " + e.Message + "), reconnecting in " + e.RetryDelay.TotalSeconds.ToString("F1") + " s", this);
                    break;
                case AdaptationEventKind.SubscriptionFailed:
                    Debug.LogError("avatar-meta: subscription stopped: " + e.Status + " " + e.Message, this);
                    break;
            }
            EventReceived?.Invoke(e);
        }

        private void Stage(PolicyNetwork network, string source)
        {
            var environment = AvatarEnvironment.Active;
            if (environment == null) return;
            int staged = 0;
            var areas = environment.Areas;
            for (int i = 0; i < areas.Count; i++)
            {
                if (areaIndex != -1 && areas[i].AreaIndex != areaIndex) continue;
                areas[i].ReceivePolicy(network, actWhileTrainerConnected);
                staged++;
            }
            Debug.Log("avatar-meta: policy v" + network.Version + " (task '" + network.TaskId + "') from " + source + " staged on " + staged + " area(s)", this);
        }

        private string ReadTokenFromEnvironment()
        {
            if (string.IsNullOrEmpty(tokenEnvironmentVariable)) return null;
            string value = Environment.GetEnvironmentVariable(tokenEnvironmentVariable);
            return string.IsNullOrEmpty(value) ? null : value.Trim();
        }
    }
}
