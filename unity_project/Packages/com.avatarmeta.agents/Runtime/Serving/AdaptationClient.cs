using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace AvatarMeta
{
    /// <summary>gRPC status codes (same numbers as Grpc.Core.StatusCode), so this file needs no Grpc.Core.</summary>
    public enum AdaptationStatus
    {
        /// <summary>Not an error.</summary>
        OK = 0,
        /// <summary>The call was cancelled.</summary>
        Cancelled = 1,
        /// <summary>Unknown error (also: a transport failure without a status).</summary>
        Unknown = 2,
        /// <summary>A request field is wrong; the message names it. Retrying cannot help.</summary>
        InvalidArgument = 3,
        /// <summary>The deadline passed.</summary>
        DeadlineExceeded = 4,
        /// <summary>Not found.</summary>
        NotFound = 5,
        /// <summary>Already exists.</summary>
        AlreadyExists = 6,
        /// <summary>Not allowed.</summary>
        PermissionDenied = 7,
        /// <summary>Server busy or message too large: retry later with backoff.</summary>
        ResourceExhausted = 8,
        /// <summary>Failed precondition.</summary>
        FailedPrecondition = 9,
        /// <summary>Aborted.</summary>
        Aborted = 10,
        /// <summary>Out of range.</summary>
        OutOfRange = 11,
        /// <summary>The server does not implement the method (wrong server or version).</summary>
        Unimplemented = 12,
        /// <summary>Server bug.</summary>
        Internal = 13,
        /// <summary>Not reachable or shutting down: reconnect later.</summary>
        Unavailable = 14,
        /// <summary>Data loss.</summary>
        DataLoss = 15,
        /// <summary>Missing or wrong bearer token.</summary>
        Unauthenticated = 16,
    }

    /// <summary>A call to the adaptation service ended with a gRPC status other than OK.</summary>
    public sealed class AdaptationRpcException : Exception
    {
        /// <summary>The status code.</summary>
        public AdaptationStatus Status { get; }
        /// <summary>The status detail sent by the server (or the transport's description).</summary>
        public string Detail { get; }

        /// <summary>Creates the exception.</summary>
        public AdaptationRpcException(AdaptationStatus status, string detail, Exception inner = null)
            : base(status + ": " + detail, inner)
        {
            Status = status;
            Detail = detail ?? "";
        }

        /// <summary>
        /// True when retrying the same call later can succeed (UNAVAILABLE, RESOURCE_EXHAUSTED,
        /// DEADLINE_EXCEEDED, ABORTED, INTERNAL, UNKNOWN, CANCELLED by the server, DATA_LOSS);
        /// false for UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, UNIMPLEMENTED,
        /// NOT_FOUND, FAILED_PRECONDITION, OUT_OF_RANGE, ALREADY_EXISTS, which need a fix first.
        /// </summary>
        public static bool IsRetryable(AdaptationStatus status)
        {
            switch (status)
            {
                case AdaptationStatus.Unavailable:
                case AdaptationStatus.ResourceExhausted:
                case AdaptationStatus.DeadlineExceeded:
                case AdaptationStatus.Aborted:
                case AdaptationStatus.Internal:
                case AdaptationStatus.Unknown:
                case AdaptationStatus.Cancelled:
                case AdaptationStatus.DataLoss:
                    return true;
                default:
                    return false;
            }
        }
    }

    /// <summary>
    /// Exponential backoff with jitter, as gRPC's connection-backoff document describes it:
    /// the n-th delay is min(initial * multiplier^n, max), spread uniformly by +-jitter.
    /// Not thread-safe (one schedule per retry loop).
    /// </summary>
    public sealed class BackoffSchedule
    {
        private readonly Random _random;
        private double _currentSeconds;

        /// <summary>First delay.</summary>
        public TimeSpan Initial { get; }
        /// <summary>Growth factor per attempt (&gt;= 1).</summary>
        public double Multiplier { get; }
        /// <summary>Relative spread in [0, 1): a delay d becomes d * (1 + jitter * u), u uniform in [-1, 1).</summary>
        public double Jitter { get; }
        /// <summary>Cap of the un-jittered delay.</summary>
        public TimeSpan Max { get; }
        /// <summary>Delays handed out since the last <see cref="Reset"/>.</summary>
        public int Attempt { get; private set; }

        /// <summary>Creates a schedule; <paramref name="random"/> supplies the jitter (pass a seeded one in tests).</summary>
        public BackoffSchedule(TimeSpan initial, double multiplier, double jitter, TimeSpan max, Random random = null)
        {
            if (initial <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(initial), "must be positive");
            if (multiplier < 1.0 || double.IsNaN(multiplier) || double.IsInfinity(multiplier)) throw new ArgumentOutOfRangeException(nameof(multiplier), "must be >= 1");
            if (jitter < 0.0 || jitter >= 1.0 || double.IsNaN(jitter)) throw new ArgumentOutOfRangeException(nameof(jitter), "must be in [0, 1)");
            if (max < initial) throw new ArgumentOutOfRangeException(nameof(max), "must be >= initial");
            Initial = initial;
            Multiplier = multiplier;
            Jitter = jitter;
            Max = max;
            _random = random ?? new Random(Guid.NewGuid().GetHashCode());
            Reset();
        }

        /// <summary>The next delay (grows until <see cref="Max"/>).</summary>
        public TimeSpan Next()
        {
            double baseSeconds = _currentSeconds;
            _currentSeconds = Math.Min(_currentSeconds * Multiplier, Max.TotalSeconds);
            Attempt++;
            double u = _random.NextDouble() * 2.0 - 1.0;
            // FromTicks: TimeSpan.FromSeconds rounds to whole milliseconds on .NET Framework/Mono.
            return TimeSpan.FromTicks((long)(Math.Max(0.0, baseSeconds * (1.0 + Jitter * u)) * TimeSpan.TicksPerSecond));
        }

        /// <summary>Starts over at <see cref="Initial"/> (after a success).</summary>
        public void Reset()
        {
            _currentSeconds = Initial.TotalSeconds;
            Attempt = 0;
        }
    }

    /// <summary>
    /// A bounded, thread-safe queue from background threads to the main thread. Producers never
    /// block: when full, the oldest item is dropped (a client only ever needs the newest policy).
    /// The main thread drains it, e.g. in <c>Update</c>.
    /// </summary>
    public sealed class MainThreadInbox<T>
    {
        private readonly object _lock = new object();
        private readonly Queue<T> _items = new Queue<T>();

        /// <summary>Most items held at once.</summary>
        public int Capacity { get; }
        /// <summary>Items dropped because the inbox was full.</summary>
        public long Dropped { get; private set; }

        /// <summary>Creates an inbox holding at most <paramref name="capacity"/> items.</summary>
        public MainThreadInbox(int capacity = 64)
        {
            if (capacity < 1) throw new ArgumentOutOfRangeException(nameof(capacity));
            Capacity = capacity;
        }

        /// <summary>Items waiting.</summary>
        public int Count { get { lock (_lock) return _items.Count; } }

        /// <summary>Adds an item (any thread); returns false when an older item was dropped to make room.</summary>
        public bool Post(T item)
        {
            lock (_lock)
            {
                bool dropped = false;
                while (_items.Count >= Capacity)
                {
                    _items.Dequeue();
                    Dropped++;
                    dropped = true;
                }
                _items.Enqueue(item);
                return !dropped;
            }
        }

        /// <summary>Takes the oldest item, if any.</summary>
        public bool TryTake(out T item)
        {
            lock (_lock)
            {
                if (_items.Count == 0) { item = default(T); return false; }
                item = _items.Dequeue();
                return true;
            }
        }

        /// <summary>Hands up to <paramref name="max"/> items, oldest first, to <paramref name="handler"/> (outside the lock); returns how many.</summary>
        public int Drain(Action<T> handler, int max = int.MaxValue)
        {
            if (handler == null) throw new ArgumentNullException(nameof(handler));
            int n = 0;
            while (n < max && TryTake(out T item))
            {
                handler(item);
                n++;
            }
            return n;
        }
    }

    /// <summary>Per-call metadata, deadline and cancellation handed to an <see cref="IAdaptationTransport"/>.</summary>
    public struct AdaptationCall
    {
        /// <summary>ASCII metadata pairs (lower-case keys), e.g. authorization.</summary>
        public IReadOnlyList<KeyValuePair<string, string>> Headers;
        /// <summary>Absolute UTC deadline, or null for none.</summary>
        public DateTime? DeadlineUtc;
        /// <summary>Cancels the call.</summary>
        public CancellationToken Cancellation;
    }

    /// <summary>A server stream of serialised <c>PolicyWeightsEnvelope</c>s.</summary>
    public interface IEnvelopeStream : IDisposable
    {
        /// <summary>Waits for the next message; false when the server ended the stream with OK. Throws <see cref="AdaptationRpcException"/> on a status.</summary>
        Task<bool> MoveNextAsync(CancellationToken cancellation);
        /// <summary>The current message's bytes, exactly as received.</summary>
        byte[] Current { get; }
    }

    /// <summary>
    /// The network under <see cref="AdaptationClient"/>: raw request bytes in, raw response bytes
    /// out, errors as <see cref="AdaptationRpcException"/>. <c>GrpcAdaptationTransport</c> is the
    /// real one (Grpc.Core); tests use an in-memory one.
    /// </summary>
    public interface IAdaptationTransport : IDisposable
    {
        /// <summary>Unary <c>Adapt</c>: serialised AdaptRequest in, serialised AdaptResponse out.</summary>
        Task<byte[]> AdaptAsync(byte[] request, AdaptationCall call);
        /// <summary>Server-streaming <c>Subscribe</c>: serialised SubscribeRequest in.</summary>
        IEnvelopeStream Subscribe(byte[] request, AdaptationCall call);
    }

    /// <summary>Settings of an <see cref="AdaptationClient"/>.</summary>
    public sealed class AdaptationClientOptions
    {
        /// <summary>Service address, host:port (the default is <c>avatar-meta serve</c>'s).</summary>
        public string Address = "127.0.0.1:50061";
        /// <summary>Use TLS (required for any non-loopback address unless <see cref="AllowInsecureRemote"/>).</summary>
        public bool UseTls;
        /// <summary>PEM root certificates for TLS; null uses gRPC's default roots.</summary>
        public string RootCertificatesPem;
        /// <summary>Allow a plaintext connection to a non-loopback host (the token would travel in clear text).</summary>
        public bool AllowInsecureRemote;
        /// <summary>Bearer token sent as <c>authorization: Bearer &lt;token&gt;</c> on every call; null/empty sends none.</summary>
        public string Token;
        /// <summary>Behaviour name the client subscribes to and adapts for.</summary>
        public string BehaviorName = AvatarContract.BehaviorName;
        /// <summary>Observation width policies must have (&lt;= 0 accepts any).</summary>
        public int ExpectedObservationSize = AvatarContract.ObservationSize;
        /// <summary>Deadline of each Adapt attempt.</summary>
        public TimeSpan AdaptDeadline = TimeSpan.FromSeconds(30);
        /// <summary>Attempts per Adapt call when the status is retryable (1 = no retry).</summary>
        public int AdaptMaxAttempts = 3;
        /// <summary>Deadline of one Subscribe stream; the client then re-subscribes at once from the newest version it has (this also detects dead connections).</summary>
        public TimeSpan SubscribeStreamLifetime = TimeSpan.FromMinutes(10);
        /// <summary>First reconnect delay.</summary>
        public TimeSpan BackoffInitial = TimeSpan.FromSeconds(1);
        /// <summary>Reconnect delay growth per failed attempt.</summary>
        public double BackoffMultiplier = 1.6;
        /// <summary>Reconnect delay spread (+-20%).</summary>
        public double BackoffJitter = 0.2;
        /// <summary>Largest reconnect delay (before jitter).</summary>
        public TimeSpan BackoffMax = TimeSpan.FromSeconds(30);
        /// <summary>Largest message accepted from the server (envelopes with ONNX can be several MiB).</summary>
        public int MaxReceiveMessageBytes = 64 * 1024 * 1024;
        /// <summary>Events held for the main thread before the oldest are dropped.</summary>
        public int InboxCapacity = 64;

        /// <summary>Throws <see cref="ArgumentException"/> naming the first bad setting.</summary>
        public void Validate()
        {
            if (string.IsNullOrEmpty(Address) || Address.IndexOf(':') < 0) throw new ArgumentException("Address must be host:port, got '" + Address + "'");
            if (!UseTls && !AllowInsecureRemote && !IsLoopback(Address))
                throw new ArgumentException("Address " + Address + " is not loopback: enable UseTls (or AllowInsecureRemote, which sends the token in clear text)");
            CallHeaders.Build(Token); // validates the token
            if (string.IsNullOrEmpty(BehaviorName)) throw new ArgumentException("BehaviorName is empty");
            if (AdaptDeadline <= TimeSpan.Zero) throw new ArgumentException("AdaptDeadline must be positive");
            if (AdaptMaxAttempts < 1) throw new ArgumentException("AdaptMaxAttempts must be >= 1");
            if (SubscribeStreamLifetime <= TimeSpan.Zero) throw new ArgumentException("SubscribeStreamLifetime must be positive");
            if (MaxReceiveMessageBytes < 1024) throw new ArgumentException("MaxReceiveMessageBytes is too small");
            if (InboxCapacity < 1) throw new ArgumentException("InboxCapacity must be >= 1");
            new BackoffSchedule(BackoffInitial, BackoffMultiplier, BackoffJitter, BackoffMax, new Random(0));
        }

        /// <summary>The host part of a host:port address ([v6]:port and bare v6 accepted).</summary>
        public static string HostOf(string address)
        {
            if (string.IsNullOrEmpty(address)) return "";
            string a = address.Trim();
            int scheme = a.IndexOf("://", StringComparison.Ordinal);
            if (scheme >= 0) a = a.Substring(scheme + 3).TrimStart('/'); // dns:///host:port
            else if (a.StartsWith("dns:", StringComparison.OrdinalIgnoreCase) || a.StartsWith("ipv4:", StringComparison.OrdinalIgnoreCase) || a.StartsWith("ipv6:", StringComparison.OrdinalIgnoreCase))
                a = a.Substring(a.IndexOf(':') + 1);
            if (a.StartsWith("[", StringComparison.Ordinal))
            {
                int close = a.IndexOf(']');
                return close > 0 ? a.Substring(1, close - 1) : a;
            }
            int first = a.IndexOf(':'), last = a.LastIndexOf(':');
            if (first >= 0 && first == last) return a.Substring(0, first);
            return a; // bare IPv6 or no port
        }

        /// <summary>True for localhost, 127.0.0.0/8 and ::1.</summary>
        public static bool IsLoopback(string address)
        {
            string host = HostOf(address).ToLowerInvariant();
            if (host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1") return true;
            var parts = host.Split('.');
            if (parts.Length != 4 || parts[0] != "127") return false;
            foreach (var p in parts)
            {
                if (!int.TryParse(p, out int octet) || octet < 0 || octet > 255) return false;
            }
            return true;
        }
    }

    /// <summary>Call metadata for the adaptation service.</summary>
    public static class CallHeaders
    {
        /// <summary>The metadata key the server checks (lower case, as gRPC requires).</summary>
        public const string AuthorizationKey = "authorization";

        /// <summary>
        /// <c>[("authorization", "Bearer " + token)]</c>, or no entry for a null/empty token.
        /// Throws <see cref="ArgumentException"/> for tokens that cannot be a header value
        /// (whitespace, control or non-ASCII characters: header injection, copy-paste accidents).
        /// </summary>
        public static IReadOnlyList<KeyValuePair<string, string>> Build(string token)
        {
            var headers = new List<KeyValuePair<string, string>>(1);
            if (string.IsNullOrEmpty(token)) return headers;
            for (int i = 0; i < token.Length; i++)
            {
                char c = token[i];
                if (c <= 0x20 || c >= 0x7F) throw new ArgumentException("the token contains whitespace, control or non-ASCII characters (position " + i + ")");
            }
            headers.Add(new KeyValuePair<string, string>(AuthorizationKey, "Bearer " + token));
            return headers;
        }
    }

    /// <summary>What happened in an <see cref="AdaptationClient"/>, delivered on the main thread through <see cref="AdaptationClient.Events"/>.</summary>
    public enum AdaptationEventKind
    {
        /// <summary>A verified policy arrived on the subscription (<see cref="AdaptationEvent.Network"/>).</summary>
        PolicyReceived,
        /// <summary>An envelope was refused (bad signature, wrong behaviour/task/size); the running version stays.</summary>
        PolicyRejected,
        /// <summary>An Adapt call returned verified weights (<see cref="AdaptationEvent.Result"/>).</summary>
        AdaptCompleted,
        /// <summary>An Adapt call failed (status in <see cref="AdaptationEvent.Status"/>).</summary>
        AdaptFailed,
        /// <summary>The subscription lost its stream and will reconnect after <see cref="AdaptationEvent.RetryDelay"/>.</summary>
        SubscriptionRetrying,
        /// <summary>The subscription stopped for good (e.g. UNAUTHENTICATED); fix and restart it.</summary>
        SubscriptionFailed,
    }

    /// <summary>One client event.</summary>
    public sealed class AdaptationEvent
    {
        /// <summary>What happened.</summary>
        public AdaptationEventKind Kind;
        /// <summary>The verified network (PolicyReceived, AdaptCompleted).</summary>
        public PolicyNetwork Network;
        /// <summary>The Adapt result (AdaptCompleted).</summary>
        public AdaptationResult Result;
        /// <summary>The status of a failure (OK otherwise).</summary>
        public AdaptationStatus Status;
        /// <summary>Human-readable detail.</summary>
        public string Message = "";
        /// <summary>Delay before the next reconnect (SubscriptionRetrying).</summary>
        public TimeSpan RetryDelay;

        /// <inheritdoc/>
        public override string ToString() => Kind + (Network != null ? " v" + Network.Version : "") + (Status != AdaptationStatus.OK ? " " + Status : "") + (Message.Length > 0 ? ": " + Message : "");
    }

    /// <summary>A verified Adapt answer.</summary>
    public sealed class AdaptationResult
    {
        /// <summary>The adapted policy, verified and built (stage it on an area's StreamedPolicy).</summary>
        public PolicyNetwork Network;
        /// <summary>The signed envelope as received (keep it to reload later).</summary>
        public byte[] Envelope;
        /// <summary>Sentis ONNX with the adapted weights, when asked for (else empty).</summary>
        public byte[] Onnx;
        /// <summary>Server-side adaptation time.</summary>
        public double AdaptMs;
    }

    /// <summary>Where the subscription is.</summary>
    public enum SubscriptionState
    {
        /// <summary>Not started.</summary>
        Idle,
        /// <summary>Opening a stream.</summary>
        Connecting,
        /// <summary>A stream is open.</summary>
        Streaming,
        /// <summary>Waiting before the next reconnect.</summary>
        BackingOff,
        /// <summary>Stopped for good after a non-retryable status.</summary>
        Failed,
        /// <summary>Stopped by the caller.</summary>
        Stopped,
    }

    /// <summary>
    /// Client of <c>avatar_meta.v1.AdaptationService</c> (<c>avatar-meta serve</c>): unary
    /// <c>Adapt</c> (few-shot experience in, signed PolicyWeights out) and server-streaming
    /// <c>Subscribe</c> (every new version for a behaviour/task), with the bearer token on every
    /// call, a deadline on every call, reconnect with exponential backoff and jitter, and
    /// signature verification (<see cref="SignedPolicyLoader"/>) of everything received before
    /// it is handed on.
    /// </summary>
    /// <remarks>
    /// <para>Never blocks the caller: calls run on thread-pool tasks; verified policies and
    /// errors are posted to <see cref="Events"/>, which the main thread drains (the
    /// <c>AvatarAdaptationClient</c> component does it in <c>Update</c> and stages the policies
    /// on its areas). <see cref="AdaptAsync"/> also returns a Task for callers that prefer it;
    /// do not block on it from the main thread.</para>
    /// <para>The trusted key is used under a lock (one RSA instance is not safe for concurrent
    /// use); give the client its own <see cref="PolicyPublicKey"/> instance.</para>
    /// </remarks>
    public sealed class AdaptationClient : IDisposable
    {
        private readonly IAdaptationTransport _transport;
        private readonly AdaptationClientOptions _options;
        private readonly PolicyPublicKey _trustedKey;
        private readonly object _keyLock = new object();
        private readonly object _stateLock = new object();
        private readonly IReadOnlyList<KeyValuePair<string, string>> _headers;
        private readonly Random _random;
        private readonly CancellationTokenSource _lifetime = new CancellationTokenSource();
        private CancellationTokenSource _subscription;
        private Task _subscriptionTask;
        private SubscriptionState _state = SubscriptionState.Idle;
        private string _lastError = "";
        private long _latestVersion;
        private int _reconnects;
        private bool _disposed;

        /// <summary>Verified policies and errors, for the main thread.</summary>
        public MainThreadInbox<AdaptationEvent> Events { get; }

        /// <summary>The options (do not change them after construction).</summary>
        public AdaptationClientOptions Options => _options;

        /// <summary>Where the subscription is.</summary>
        public SubscriptionState State { get { lock (_stateLock) return _state; } }

        /// <summary>The last error seen by the subscription ("" when none).</summary>
        public string LastError { get { lock (_stateLock) return _lastError; } }

        /// <summary>Newest policy version accepted (subscription and Adapt); re-subscribing asks only for newer ones.</summary>
        public ulong LatestVersion => (ulong)Interlocked.Read(ref _latestVersion);

        /// <summary>Streams opened after the first one.</summary>
        public int Reconnects => Volatile.Read(ref _reconnects);

        /// <summary>
        /// Creates a client over <paramref name="transport"/> (which it owns and disposes).
        /// <paramref name="trustedKey"/> may be null: then every policy is refused, as elsewhere
        /// in the package. <paramref name="random"/> drives the backoff jitter (seed it in tests).
        /// </summary>
        public AdaptationClient(IAdaptationTransport transport, AdaptationClientOptions options, PolicyPublicKey trustedKey, Random random = null)
        {
            if (transport == null) throw new ArgumentNullException(nameof(transport));
            if (options == null) throw new ArgumentNullException(nameof(options));
            options.Validate();
            _transport = transport;
            _options = options;
            _trustedKey = trustedKey;
            _headers = CallHeaders.Build(options.Token);
            _random = random ?? new Random(Guid.NewGuid().GetHashCode());
            Events = new MainThreadInbox<AdaptationEvent>(options.InboxCapacity);
        }

        /// <summary>A new backoff schedule with the client's settings.</summary>
        public BackoffSchedule NewBackoff()
        {
            lock (_random) return new BackoffSchedule(_options.BackoffInitial, _options.BackoffMultiplier, _options.BackoffJitter, _options.BackoffMax, new Random(_random.Next()));
        }

        /// <summary>Metadata, deadline and cancellation of one call.</summary>
        public AdaptationCall NewCall(TimeSpan deadline, CancellationToken cancellation) =>
            new AdaptationCall { Headers = _headers, DeadlineUtc = DateTime.UtcNow + deadline, Cancellation = cancellation };

        // ------------------------------------------------------------------------ Adapt

        /// <summary>
        /// Sends a serialised AdaptRequest (<see cref="AdaptationWire.EncodeAdaptRequest"/>, or a
        /// generated <c>AdaptRequest</c>'s bytes) on a thread-pool task, retrying retryable
        /// statuses with backoff up to <see cref="AdaptationClientOptions.AdaptMaxAttempts"/>;
        /// verifies the returned weights and posts AdaptCompleted (or AdaptFailed) to
        /// <see cref="Events"/>. The task faults with <see cref="AdaptationRpcException"/> or
        /// <see cref="PolicyVerificationException"/>.
        /// </summary>
        public Task<AdaptationResult> AdaptAsync(byte[] request, CancellationToken cancellation = default(CancellationToken))
        {
            if (request == null) throw new ArgumentNullException(nameof(request));
            ThrowIfDisposed();
            if (!cancellation.CanBeCanceled)
                return Task.Run(() => AdaptWithRetries(request, _lifetime.Token), _lifetime.Token);
            // The linked source is disposed by a continuation on the thread pool, never inline
            // inside a Cancel() (disposing then waits for a running cancellation callback).
            var linked = CancellationTokenSource.CreateLinkedTokenSource(_lifetime.Token, cancellation);
            var task = Task.Run(() => AdaptWithRetries(request, linked.Token), linked.Token);
            task.ContinueWith(t => linked.Dispose(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
            return task;
        }

        private async Task<AdaptationResult> AdaptWithRetries(byte[] request, CancellationToken cancellation)
        {
            var backoff = NewBackoff();
            for (int attempt = 1; ; attempt++)
            {
                try
                {
                    byte[] response = await _transport.AdaptAsync(request, NewCall(_options.AdaptDeadline, cancellation)).ConfigureAwait(false);
                    AdaptResponseData data;
                    try { data = AdaptationWire.DecodeAdaptResponse(response); }
                    catch (FormatException err) { throw new PolicyVerificationException("malformed AdaptResponse: " + err.Message); }
                    var network = Verify(data.Envelope, null);
                    var result = new AdaptationResult { Network = network, Envelope = data.Envelope, Onnx = data.Onnx, AdaptMs = data.AdaptMs };
                    Events.Post(new AdaptationEvent { Kind = AdaptationEventKind.AdaptCompleted, Network = network, Result = result });
                    return result;
                }
                catch (AdaptationRpcException) when (cancellation.IsCancellationRequested)
                {
                    throw new OperationCanceledException(cancellation); // our own cancellation, not a server status
                }
                catch (AdaptationRpcException err) when (attempt < _options.AdaptMaxAttempts && AdaptationRpcException.IsRetryable(err.Status) && !cancellation.IsCancellationRequested)
                {
                    await Task.Delay(backoff.Next(), cancellation).ConfigureAwait(false);
                }
                catch (AdaptationRpcException err)
                {
                    Events.Post(new AdaptationEvent { Kind = AdaptationEventKind.AdaptFailed, Status = err.Status, Message = err.Detail });
                    throw;
                }
                catch (PolicyVerificationException err)
                {
                    Events.Post(new AdaptationEvent { Kind = AdaptationEventKind.AdaptFailed, Status = AdaptationStatus.OK, Message = "refused: " + err.Message });
                    throw;
                }
            }
        }

        // -------------------------------------------------------------------- Subscribe

        /// <summary>
        /// Starts (or restarts) the subscription to new versions of <paramref name="taskId"/>
        /// ("" = every task of the behaviour), newer than <paramref name="afterVersion"/> or than
        /// <see cref="LatestVersion"/>, whichever is newer. Returns at once; the stream runs on a
        /// thread-pool task and reconnects with backoff until <see cref="StopSubscription"/>, a
        /// non-retryable status, or <see cref="Dispose"/>.
        /// </summary>
        public void StartSubscription(string taskId = "", ulong afterVersion = 0)
        {
            ThrowIfDisposed();
            StopSubscription();
            if (afterVersion > LatestVersion) Interlocked.Exchange(ref _latestVersion, (long)afterVersion);
            // Not linked to anything (so nothing to unregister or dispose): StopSubscription and
            // Dispose cancel it directly.
            var cts = new CancellationTokenSource();
            lock (_stateLock)
            {
                _subscription = cts;
                _state = SubscriptionState.Connecting;
                _lastError = "";
            }
            string task = taskId ?? "";
            _subscriptionTask = Task.Run(() => SubscribeLoop(task, cts), cts.Token);
        }

        /// <summary>Stops the subscription (returns at once; the stream is cancelled in the background).</summary>
        public void StopSubscription()
        {
            CancellationTokenSource cts;
            lock (_stateLock)
            {
                cts = _subscription;
                _subscription = null;
                if (cts != null && _state != SubscriptionState.Failed) _state = SubscriptionState.Stopped;
            }
            if (cts != null) cts.Cancel();
        }

        /// <summary>For tests and shutdown code off the main thread: waits until the subscription task ends.</summary>
        public bool WaitForSubscriptionEnd(TimeSpan timeout)
        {
            var task = _subscriptionTask;
            if (task == null) return true;
            try { return task.Wait(timeout); }
            catch (AggregateException) { return true; }
        }

        private async Task SubscribeLoop(string taskId, CancellationTokenSource owner)
        {
            var cancellation = owner.Token;
            var backoff = NewBackoff();
            bool first = true;
            while (!cancellation.IsCancellationRequested)
            {
                if (!first) Interlocked.Increment(ref _reconnects);
                first = false;
                SetState(owner, SubscriptionState.Connecting, null);
                DateTime opened = DateTime.UtcNow;
                AdaptationStatus status;
                string detail;
                try
                {
                    byte[] request = AdaptationWire.EncodeSubscribeRequest(_options.BehaviorName, taskId, LatestVersion);
                    using (var stream = _transport.Subscribe(request, NewCall(_options.SubscribeStreamLifetime, cancellation)))
                    {
                        SetState(owner, SubscriptionState.Streaming, null);
                        while (await stream.MoveNextAsync(cancellation).ConfigureAwait(false))
                        {
                            backoff.Reset();
                            OnEnvelope(stream.Current, taskId);
                        }
                    }
                    status = AdaptationStatus.Unavailable;
                    detail = "the server ended the stream";
                }
                catch (AdaptationRpcException err)
                {
                    status = err.Status;
                    detail = err.Detail;
                }
                catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception err)
                {
                    status = AdaptationStatus.Unknown;
                    detail = err.GetType().Name + ": " + err.Message;
                }
                if (cancellation.IsCancellationRequested) break;

                if (!AdaptationRpcException.IsRetryable(status))
                {
                    SetState(owner, SubscriptionState.Failed, status + ": " + detail);
                    Events.Post(new AdaptationEvent { Kind = AdaptationEventKind.SubscriptionFailed, Status = status, Message = detail });
                    return;
                }
                // The stream reached its own deadline: renew at once, it is not a failure.
                if (status == AdaptationStatus.DeadlineExceeded && DateTime.UtcNow - opened >= TimeSpan.FromTicks(_options.SubscribeStreamLifetime.Ticks * 9 / 10))
                {
                    backoff.Reset();
                    continue;
                }
                var delay = backoff.Next();
                SetState(owner, SubscriptionState.BackingOff, status + ": " + detail);
                Events.Post(new AdaptationEvent { Kind = AdaptationEventKind.SubscriptionRetrying, Status = status, Message = detail, RetryDelay = delay });
                try { await Task.Delay(delay, cancellation).ConfigureAwait(false); }
                catch (OperationCanceledException) { break; }
            }
        }

        private void OnEnvelope(byte[] envelope, string taskId)
        {
            PolicyNetwork network;
            try
            {
                network = Verify(envelope, taskId);
            }
            catch (PolicyVerificationException err)
            {
                Events.Post(new AdaptationEvent { Kind = AdaptationEventKind.PolicyRejected, Message = err.Message });
                return;
            }
            if (network == null) return; // not newer than what we have (replay after a reconnect)
            Events.Post(new AdaptationEvent { Kind = AdaptationEventKind.PolicyReceived, Network = network });
        }

        /// <summary>
        /// Verifies an envelope with the trusted key (signature first, then parse), checks the
        /// behaviour, task and observation size, and builds the network. <paramref name="subscriptionTask"/>
        /// is null for Adapt answers, else the subscribed task ("" = any); on the subscription path
        /// a version not newer than <see cref="LatestVersion"/> returns null. Throws
        /// <see cref="PolicyVerificationException"/>.
        /// </summary>
        public PolicyNetwork Verify(byte[] envelope, string subscriptionTask)
        {
            PolicyWeightsData data;
            lock (_keyLock) data = SignedPolicyLoader.Open(envelope, _trustedKey);
            if (data.BehaviorName.Length > 0 && data.BehaviorName != _options.BehaviorName)
                throw new PolicyVerificationException("policy is for behaviour '" + data.BehaviorName + "', this client serves '" + _options.BehaviorName + "'");
            if (!string.IsNullOrEmpty(subscriptionTask) && data.TaskId != subscriptionTask)
                throw new PolicyVerificationException("policy is for task '" + data.TaskId + "', subscribed to '" + subscriptionTask + "'");
            PolicyNetwork network;
            try { network = new PolicyNetwork(data); }
            catch (FormatException err) { throw new PolicyVerificationException("inconsistent PolicyWeights: " + err.Message); }
            if (_options.ExpectedObservationSize > 0 && network.ObservationSize != _options.ExpectedObservationSize)
                throw new PolicyVerificationException("policy observes " + network.ObservationSize + " values, expected " + _options.ExpectedObservationSize);
            // On the subscription, accept only versions newer than the newest seen (a reconnect
            // asks for newer ones, but the server may still replay the latest).
            while (true)
            {
                long seen = Interlocked.Read(ref _latestVersion);
                if ((ulong)seen >= network.Version) return subscriptionTask != null ? null : network;
                if (Interlocked.CompareExchange(ref _latestVersion, (long)network.Version, seen) == seen) return network;
            }
        }

        /// <summary>Updates the state on behalf of the subscription <paramref name="owner"/>; ignored once that subscription was replaced or stopped.</summary>
        private void SetState(CancellationTokenSource owner, SubscriptionState state, string error)
        {
            lock (_stateLock)
            {
                if (!ReferenceEquals(_subscription, owner)) return;
                _state = state;
                if (error != null) _lastError = error;
            }
        }

        private void ThrowIfDisposed()
        {
            if (_disposed) throw new ObjectDisposedException(nameof(AdaptationClient));
        }

        /// <summary>Cancels every call and the subscription and disposes the transport. Does not wait.</summary>
        public void Dispose()
        {
            if (_disposed) return;
            _disposed = true;
            StopSubscription();
            _lifetime.Cancel();
            try { _transport.Dispose(); }
            catch (ObjectDisposedException) { }
        }
    }
}
