// Runner for the network-free parts of the adaptation client and the Editor's Unity-free helpers
// (run under mono by tests/test_unity_csharp.py; no Unity, Grpc.Core or Google.Protobuf).
// Usage: mono ClientRunner.exe --client CLIENT_VECTORS.json   (backoff, headers, options, inbox,
//                                                              Subscribe/Adapt over a scripted transport)
//        mono ClientRunner.exe --encode OUT_DIR               (request bytes for Python to decode)
//        mono ClientRunner.exe --editor WORK_DIR              (trainer process start/attach/stop, export)
// Prints "CHECK <name> PASS|FAIL <detail>" lines and "RESULT PASS|FAIL"; exit code 0 only on PASS.
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using System.Threading.Tasks;
using AvatarMeta;
using AvatarMeta.Editor;

internal static class ClientRunner
{
    private static bool s_ok = true;

    private static int Main(string[] args)
    {
        if (args.Length != 2) { Console.Error.WriteLine("usage: ClientRunner --client VECTORS.json | --encode OUT_DIR | --editor WORK_DIR"); return 2; }
        try
        {
            switch (args[0])
            {
                case "--client": ClientChecks(args[1]); break;
                case "--encode": Encode(args[1]); break;
                case "--editor": EditorChecks(args[1]); break;
                default: Console.Error.WriteLine("unknown mode " + args[0]); return 2;
            }
        }
        catch (Exception err)
        {
            Check("unexpected-exception", false, err.ToString());
        }
        Console.WriteLine(s_ok ? "RESULT PASS" : "RESULT FAIL");
        return s_ok ? 0 : 1;
    }

    private static void Check(string name, bool ok, string detail = "")
    {
        s_ok &= ok;
        Console.WriteLine("CHECK " + name + " " + (ok ? "PASS" : "FAIL") + (detail.Length > 0 ? " " + detail : ""));
    }

    private static string F(double v) => v.ToString("R", CultureInfo.InvariantCulture);

    // ------------------------------------------------------------------------- client

    private static void ClientChecks(string vectorsPath)
    {
        var vectors = ParseVectors(File.ReadAllText(vectorsPath));
        BackoffChecks();
        HeaderAndOptionChecks();
        InboxChecks();
        var key = PolicyPublicKey.FromPem(vectors["public_key_pem"]);
        SubscriptionChecks(vectors, key);
        RenewalAndDisposeChecks(vectors, key);
        AdaptChecks(vectors, key);
        NoKeyCheck(vectors);
    }

    private static void BackoffChecks()
    {
        var schedule = new BackoffSchedule(TimeSpan.FromSeconds(1), 1.6, 0.2, TimeSpan.FromSeconds(30), new Random(1234));
        double expected = 1.0;
        bool within = true;
        var delays = new List<double>();
        for (int i = 0; i < 14; i++)
        {
            double d = schedule.Next().TotalSeconds;
            delays.Add(d);
            within &= d >= expected * 0.8 - 1e-9 && d <= expected * 1.2 + 1e-9;
            expected = Math.Min(expected * 1.6, 30.0);
        }
        Console.WriteLine("BACKOFF " + string.Join(" ", delays.Select(F).ToArray()));
        Check("backoff-grows-within-jitter-and-caps", within, "attempts " + schedule.Attempt);
        schedule.Reset();
        double first = schedule.Next().TotalSeconds;
        Check("backoff-reset", first >= 0.8 && first <= 1.2 && schedule.Attempt == 1, F(first));
        var again = new BackoffSchedule(TimeSpan.FromSeconds(1), 1.6, 0.2, TimeSpan.FromSeconds(30), new Random(1234));
        Check("backoff-deterministic-under-seed", Math.Abs(again.Next().TotalSeconds - delays[0]) < 1e-12);
        var spread = new BackoffSchedule(TimeSpan.FromSeconds(1), 1.0, 0.2, TimeSpan.FromSeconds(1), new Random(7));
        double lo = double.MaxValue, hi = 0;
        for (int i = 0; i < 2000; i++) { double d = spread.Next().TotalSeconds; lo = Math.Min(lo, d); hi = Math.Max(hi, d); }
        Check("backoff-jitter-spreads-both-ways", lo < 0.85 && lo >= 0.8 - 1e-6 && hi > 1.15 && hi <= 1.2 + 1e-6, "min " + F(lo) + " max " + F(hi));
        Check("backoff-rejects-bad-settings", Throws<ArgumentOutOfRangeException>(() => new BackoffSchedule(TimeSpan.Zero, 1.6, 0.2, TimeSpan.FromSeconds(1)))
            && Throws<ArgumentOutOfRangeException>(() => new BackoffSchedule(TimeSpan.FromSeconds(1), 0.5, 0.2, TimeSpan.FromSeconds(2)))
            && Throws<ArgumentOutOfRangeException>(() => new BackoffSchedule(TimeSpan.FromSeconds(1), 1.6, 1.0, TimeSpan.FromSeconds(2))));
    }

    private static void HeaderAndOptionChecks()
    {
        var headers = CallHeaders.Build("s3cr3t-token_value.123");
        Check("headers-bearer", headers.Count == 1 && headers[0].Key == "authorization" && headers[0].Value == "Bearer s3cr3t-token_value.123",
            headers.Count == 1 ? headers[0].Key + ": " + headers[0].Value : "count " + headers.Count);
        Check("headers-none-without-token", CallHeaders.Build(null).Count == 0 && CallHeaders.Build("").Count == 0);
        Check("headers-refuse-injection", Throws<ArgumentException>(() => CallHeaders.Build("abc\r\nx-evil: 1"))
            && Throws<ArgumentException>(() => CallHeaders.Build("two words")) && Throws<ArgumentException>(() => CallHeaders.Build("caf\u00e9")));

        Check("loopback-hosts", AdaptationClientOptions.IsLoopback("127.0.0.1:50061") && AdaptationClientOptions.IsLoopback("localhost:1")
            && AdaptationClientOptions.IsLoopback("[::1]:50061") && AdaptationClientOptions.IsLoopback("127.1.2.3:9")
            && AdaptationClientOptions.IsLoopback("dns:///localhost:50061"));
        Check("remote-hosts", !AdaptationClientOptions.IsLoopback("example.com:443") && !AdaptationClientOptions.IsLoopback("10.0.0.5:50061")
            && !AdaptationClientOptions.IsLoopback("[2001:db8::1]:443") && !AdaptationClientOptions.IsLoopback("127.0.0.1.evil.com:1")
            && !AdaptationClientOptions.IsLoopback("localhost.evil.com:1"));
        Check("options-refuse-plaintext-remote", Throws<ArgumentException>(() => new AdaptationClientOptions { Address = "example.com:443" }.Validate()));
        Check("options-allow-tls-remote", !Throws<ArgumentException>(() => new AdaptationClientOptions { Address = "example.com:443", UseTls = true }.Validate()));
        Check("options-allow-explicit-insecure", !Throws<ArgumentException>(() => new AdaptationClientOptions { Address = "10.0.0.5:50061", AllowInsecureRemote = true }.Validate()));
        Check("options-refuse-bad-token", Throws<ArgumentException>(() => new AdaptationClientOptions { Token = "a b" }.Validate()));
        Check("options-refuse-no-port", Throws<ArgumentException>(() => new AdaptationClientOptions { Address = "localhost" }.Validate()));
        Check("status-retryable", AdaptationRpcException.IsRetryable(AdaptationStatus.Unavailable) && AdaptationRpcException.IsRetryable(AdaptationStatus.ResourceExhausted)
            && AdaptationRpcException.IsRetryable(AdaptationStatus.DeadlineExceeded) && !AdaptationRpcException.IsRetryable(AdaptationStatus.Unauthenticated)
            && !AdaptationRpcException.IsRetryable(AdaptationStatus.InvalidArgument) && !AdaptationRpcException.IsRetryable(AdaptationStatus.Unimplemented));
    }

    private static void InboxChecks()
    {
        var inbox = new MainThreadInbox<int>(3);
        bool kept = true;
        for (int i = 1; i <= 5; i++) kept &= inbox.Post(i) || i > 3;
        var drained = new List<int>();
        int n = inbox.Drain(drained.Add);
        Check("inbox-drops-oldest", kept && n == 3 && inbox.Dropped == 2 && string.Join(",", drained.Select(x => x.ToString()).ToArray()) == "3,4,5",
            "drained " + string.Join(",", drained.Select(x => x.ToString()).ToArray()) + " dropped " + inbox.Dropped);
        // Producers on other threads, consumer here: nothing lost below capacity, order kept per producer.
        var big = new MainThreadInbox<int>(100000);
        var producers = Enumerable.Range(0, 4).Select(p => Task.Run(() => { for (int i = 0; i < 10000; i++) big.Post(p * 100000 + i); })).ToArray();
        var got = new List<int>();
        while (!producers.All(t => t.IsCompleted) || big.Count > 0) big.Drain(got.Add, 1000);
        bool ordered = true;
        for (int p = 0; p < 4; p++)
        {
            var mine = got.Where(x => x / 100000 == p).ToList();
            for (int i = 1; i < mine.Count; i++) ordered &= mine[i] == mine[i - 1] + 1;
            ordered &= mine.Count == 10000;
        }
        Check("inbox-concurrent-producers", ordered && got.Count == 40000, "got " + got.Count);
        var partial = new MainThreadInbox<int>(10);
        for (int i = 0; i < 5; i++) partial.Post(i);
        Check("inbox-drain-max", partial.Drain(x => { }, 2) == 2 && partial.Count == 3);
    }

    private static AdaptationClientOptions TestOptions() => new AdaptationClientOptions
    {
        Token = "test-token-0123456789",
        BackoffInitial = TimeSpan.FromMilliseconds(20),
        BackoffMax = TimeSpan.FromMilliseconds(80),
        BackoffMultiplier = 2.0,
        SubscribeStreamLifetime = TimeSpan.FromSeconds(30),
        AdaptDeadline = TimeSpan.FromSeconds(5),
    };

    private static List<AdaptationEvent> DrainUntil(AdaptationClient client, Func<List<AdaptationEvent>, bool> done, TimeSpan timeout)
    {
        var events = new List<AdaptationEvent>();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < timeout)
        {
            client.Events.Drain(events.Add);
            if (done(events)) break;
            Thread.Sleep(5);
        }
        client.Events.Drain(events.Add);
        return events;
    }

    private static void SubscriptionChecks(Dictionary<string, string> v, PolicyPublicKey key)
    {
        var transport = new ScriptedTransport();
        // Stream 1: version 1, then the connection drops.
        transport.Streams.Enqueue(new StreamScript().Delay(400).Yield(v["v1"]).Fail(AdaptationStatus.Unavailable, "connection reset"));
        // Stream 2: the server replays version 1, then 2, a tampered and a foreign-behaviour envelope, then ends.
        transport.Streams.Enqueue(new StreamScript().Yield(v["v1"]).Yield(v["v2"]).Yield(v["tampered"]).Yield(v["other_behavior"]).Yield(v["other_task"]).End());
        // Stream 3: the token is no longer accepted: stop for good.
        transport.Streams.Enqueue(new StreamScript().Fail(AdaptationStatus.Unauthenticated, "missing or wrong bearer token"));
        var client = new AdaptationClient(transport, TestOptions(), key, new Random(5));

        var watch = Stopwatch.StartNew();
        client.StartSubscription("greet/3");
        double startMs = watch.Elapsed.TotalMilliseconds;
        bool deliveredYet = transport.Delivered > 0;
        Check("subscribe-returns-immediately", !deliveredYet && startMs < 250, F(startMs) + " ms; the first message takes 400 ms");

        var events = DrainUntil(client, e => e.Any(x => x.Kind == AdaptationEventKind.SubscriptionFailed), TimeSpan.FromSeconds(10));
        string kinds = string.Join(",", events.Select(e => e.Kind + (e.Network != null ? ":v" + e.Network.Version : "") + (e.Status != AdaptationStatus.OK ? ":" + e.Status : "")).ToArray());
        Console.WriteLine("EVENTS " + kinds);
        Check("subscribe-event-sequence", kinds == "PolicyReceived:v1,SubscriptionRetrying:Unavailable,PolicyReceived:v2,PolicyRejected,PolicyRejected,PolicyRejected,SubscriptionRetrying:Unavailable,SubscriptionFailed:Unauthenticated", kinds);
        var rejected = events.Where(e => e.Kind == AdaptationEventKind.PolicyRejected).Select(e => e.Message).ToList();
        Check("subscribe-rejects-tampered", rejected.Count == 3 && rejected[0].Contains("signature"), rejected.Count > 0 ? rejected[0] : "");
        Check("subscribe-rejects-other-behavior", rejected.Count == 3 && rejected[1].Contains("behaviour"), rejected.Count > 1 ? rejected[1] : "");
        Check("subscribe-rejects-other-task", rejected.Count == 3 && rejected[2].Contains("task"), rejected.Count > 2 ? rejected[2] : "");
        Check("subscribe-state-failed", client.State == SubscriptionState.Failed && client.LastError.StartsWith("Unauthenticated"), client.State + " " + client.LastError);
        Check("subscribe-latest-version", client.LatestVersion == 2, client.LatestVersion.ToString());
        Check("subscribe-reconnects", client.Reconnects == 2 && transport.SubscribeRequests.Count == 3, client.Reconnects + " reconnects, " + transport.SubscribeRequests.Count + " streams");

        // What went over the wire: the request asks for versions after the newest one accepted.
        var afters = transport.SubscribeRequests.Select(r => ReadSubscribe(r.Request)).ToList();
        Check("subscribe-request-fields", afters.All(a => a.Behavior == "AvatarAgent" && a.Task == "greet/3"), string.Join(";", afters.Select(a => a.Behavior + "/" + a.Task).ToArray()));
        Check("subscribe-resumes-after-latest", afters.Select(a => a.After).SequenceEqual(new ulong[] { 0, 1, 2 }), string.Join(",", afters.Select(a => a.After.ToString()).ToArray()));
        Check("subscribe-sends-token", transport.SubscribeRequests.All(r => r.Call.Headers.Count == 1 && r.Call.Headers[0].Key == "authorization" && r.Call.Headers[0].Value == "Bearer test-token-0123456789"));
        Check("subscribe-deadline", transport.SubscribeRequests.All(r => r.Call.DeadlineUtc.HasValue && Math.Abs((r.Call.DeadlineUtc.Value - r.SentUtc).TotalSeconds - 30) < 1.0));
        var retryDelays = events.Where(e => e.Kind == AdaptationEventKind.SubscriptionRetrying).Select(e => e.RetryDelay.TotalMilliseconds).ToList();
        Check("subscribe-backoff-delays", retryDelays.Count == 2 && retryDelays.All(d => d >= 16 && d <= 24), string.Join(",", retryDelays.Select(F).ToArray()) + " ms (reset after each message)");
        client.Dispose();
        Check("dispose-disposes-transport", transport.Disposed);
    }

    private static void RenewalAndDisposeChecks(Dictionary<string, string> v, PolicyPublicKey key)
    {
        var transport = new ScriptedTransport();
        transport.Streams.Enqueue(new StreamScript().Yield(v["v1"]).FailAtDeadline());
        transport.Streams.Enqueue(new StreamScript().Yield(v["v2"]).BlockUntilCancelled());
        var options = TestOptions();
        options.SubscribeStreamLifetime = TimeSpan.FromMilliseconds(120);
        var client = new AdaptationClient(transport, options, key, new Random(6));
        client.StartSubscription("");
        var events = DrainUntil(client, e => e.Count(x => x.Kind == AdaptationEventKind.PolicyReceived) >= 2, TimeSpan.FromSeconds(10));
        Check("renewal-at-deadline-without-backoff", events.Count(e => e.Kind == AdaptationEventKind.PolicyReceived) == 2 && events.All(e => e.Kind != AdaptationEventKind.SubscriptionRetrying) && client.Reconnects == 1,
            string.Join(",", events.Select(e => e.Kind.ToString()).ToArray()));
        var watch = Stopwatch.StartNew();
        client.Dispose();
        double disposeMs = watch.Elapsed.TotalMilliseconds;
        bool ended = client.WaitForSubscriptionEnd(TimeSpan.FromSeconds(5));
        Check("dispose-does-not-block", disposeMs < 250, F(disposeMs) + " ms");
        Check("dispose-cancels-stream", ended && transport.CancelledStreams == 1 && client.State == SubscriptionState.Stopped, "ended " + ended + ", cancelled " + transport.CancelledStreams + ", " + client.State);

        var stopper = new ScriptedTransport();
        stopper.Streams.Enqueue(new StreamScript().BlockUntilCancelled());
        stopper.Streams.Enqueue(new StreamScript().Yield(v["v3"]).BlockUntilCancelled());
        var restart = new AdaptationClient(stopper, TestOptions(), key, new Random(8));
        restart.StartSubscription("", 2);
        Thread.Sleep(50);
        restart.StartSubscription("greet/3");
        var got = DrainUntil(restart, e => e.Any(x => x.Kind == AdaptationEventKind.PolicyReceived), TimeSpan.FromSeconds(5));
        var reqs = stopper.SubscribeRequests.Select(r => ReadSubscribe(r.Request)).ToList();
        Check("restart-replaces-subscription", got.Count(e => e.Kind == AdaptationEventKind.PolicyReceived) == 1 && restart.State == SubscriptionState.Streaming
            && reqs.Count == 2 && reqs[0].After == 2 && reqs[1].Task == "greet/3" && stopper.CancelledStreams >= 1,
            restart.State + ", requests " + reqs.Count + ", cancelled " + stopper.CancelledStreams);
        restart.Dispose();
    }

    private static void AdaptChecks(Dictionary<string, string> v, PolicyPublicKey key)
    {
        var onnx = Encoding.ASCII.GetBytes("not-really-onnx");
        var response = AdaptResponse(Convert.FromBase64String(v["v3"]), onnx, 12.5);
        var transport = new ScriptedTransport();
        transport.AdaptAnswers.Enqueue(new AdaptationRpcException(AdaptationStatus.ResourceExhausted, "server busy"));
        transport.AdaptAnswers.Enqueue(response);
        var client = new AdaptationClient(transport, TestOptions(), key, new Random(9));
        var recorder = EpisodeRecorder.ForAvatarContract();
        recorder.AddStep(new float[AvatarContract.ObservationSize], new float[2], new int[1], new bool[4], 1f);
        byte[] request = AdaptationWire.EncodeAdaptRequest("AvatarAgent", "greet/3", new[] { recorder.Encode() }, true, 7);
        var watch = Stopwatch.StartNew();
        var task = client.AdaptAsync(request);
        double callMs = watch.Elapsed.TotalMilliseconds;
        bool finished = task.Wait(TimeSpan.FromSeconds(10));
        Check("adapt-returns-immediately", callMs < 250, F(callMs) + " ms");
        Check("adapt-retries-resource-exhausted", finished && task.Status == TaskStatus.RanToCompletion && transport.AdaptRequests.Count == 2,
            task.Status + ", attempts " + transport.AdaptRequests.Count);
        if (task.Status == TaskStatus.RanToCompletion)
        {
            var result = task.Result;
            Check("adapt-result", result.Network.Version == 3 && result.AdaptMs == 12.5 && result.Onnx.SequenceEqual(onnx) && result.Envelope.Length > 0,
                "v" + result.Network.Version + " " + F(result.AdaptMs) + " ms onnx " + result.Onnx.Length);
        }
        Check("adapt-request-bytes-untouched", transport.AdaptRequests.All(r => r.Request.SequenceEqual(request)));
        Check("adapt-sends-token-and-deadline", transport.AdaptRequests.All(r => r.Call.Headers.Count == 1 && r.Call.Headers[0].Value == "Bearer test-token-0123456789"
            && r.Call.DeadlineUtc.HasValue && Math.Abs((r.Call.DeadlineUtc.Value - r.SentUtc).TotalSeconds - 5) < 1.0));
        var events = DrainUntil(client, e => e.Any(x => x.Kind == AdaptationEventKind.AdaptCompleted), TimeSpan.FromSeconds(2));
        Check("adapt-event", events.Count == 1 && events[0].Kind == AdaptationEventKind.AdaptCompleted && events[0].Network.Version == 3);

        transport.AdaptAnswers.Enqueue(new AdaptationRpcException(AdaptationStatus.InvalidArgument, "episodes[0].obs_size: expected " + AvatarContract.ObservationSize));
        int before = transport.AdaptRequests.Count;
        var bad = client.AdaptAsync(request);
        try { bad.Wait(TimeSpan.FromSeconds(10)); } catch (AggregateException) { }
        var rpc = bad.Exception != null ? bad.Exception.InnerException as AdaptationRpcException : null;
        Check("adapt-no-retry-invalid-argument", rpc != null && rpc.Status == AdaptationStatus.InvalidArgument && transport.AdaptRequests.Count - before == 1,
            rpc != null ? rpc.Message : "no exception");
        var failed = DrainUntil(client, e => e.Any(x => x.Kind == AdaptationEventKind.AdaptFailed), TimeSpan.FromSeconds(2));
        Check("adapt-failed-event", failed.Any(e => e.Kind == AdaptationEventKind.AdaptFailed && e.Status == AdaptationStatus.InvalidArgument));

        transport.AdaptAnswers.Enqueue(AdaptResponse(Convert.FromBase64String(v["tampered"]), new byte[0], 1.0));
        var tampered = client.AdaptAsync(request);
        try { tampered.Wait(TimeSpan.FromSeconds(10)); } catch (AggregateException) { }
        Check("adapt-refuses-tampered", tampered.Exception != null && tampered.Exception.InnerException is PolicyVerificationException,
            tampered.Exception != null ? tampered.Exception.InnerException.Message : "accepted");

        transport.AdaptAnswers.Enqueue(new byte[] { 0x0A, 0x05, 0x01 });
        var malformed = client.AdaptAsync(request);
        try { malformed.Wait(TimeSpan.FromSeconds(10)); } catch (AggregateException) { }
        Check("adapt-refuses-malformed", malformed.Exception != null && malformed.Exception.InnerException is PolicyVerificationException);

        var cts = new CancellationTokenSource();
        transport.AdaptAnswers.Enqueue(new AdaptationRpcException(AdaptationStatus.Unavailable, "down"));
        transport.AdaptAnswers.Enqueue(new AdaptationRpcException(AdaptationStatus.Unavailable, "down"));
        var slow = new AdaptationClient(transport, new AdaptationClientOptions { BackoffInitial = TimeSpan.FromSeconds(5), BackoffMax = TimeSpan.FromSeconds(5) }, key);
        var cancelled = slow.AdaptAsync(request, cts.Token);
        Thread.Sleep(100);
        cts.Cancel();
        bool done = false;
        try { done = cancelled.Wait(TimeSpan.FromSeconds(2)); } catch (AggregateException) { done = true; }
        Check("adapt-cancellable-during-backoff", done && cancelled.IsCanceled, cancelled.Status.ToString());
        slow.Dispose();
        client.Dispose();
    }

    private static void NoKeyCheck(Dictionary<string, string> v)
    {
        var transport = new ScriptedTransport();
        transport.Streams.Enqueue(new StreamScript().Yield(v["v1"]).BlockUntilCancelled());
        var client = new AdaptationClient(transport, TestOptions(), null);
        client.StartSubscription("");
        var events = DrainUntil(client, e => e.Count > 0, TimeSpan.FromSeconds(5));
        Check("no-key-refuses-everything", events.Count == 1 && events[0].Kind == AdaptationEventKind.PolicyRejected && events[0].Message.Contains("no trusted public key"),
            events.Count > 0 ? events[0].ToString() : "no event");
        client.Dispose();
    }

    private static byte[] AdaptResponse(byte[] envelope, byte[] onnx, double adaptMs)
    {
        var w = new ProtoWireWriter();
        w.WriteBytesField(1, envelope);
        w.WriteBytesField(2, onnx);
        w.WriteTag(3, ProtoWireReader.WireFixed64);
        var bytes = BitConverter.GetBytes(adaptMs);
        if (!BitConverter.IsLittleEndian) Array.Reverse(bytes);
        var raw = w.ToArray().Concat(bytes).ToArray();
        return raw;
    }

    private struct SubscribeFields { public string Behavior, Task; public ulong After; }

    private static SubscribeFields ReadSubscribe(byte[] bytes)
    {
        var result = new SubscribeFields { Behavior = "", Task = "" };
        var reader = new ProtoWireReader(bytes, 0, bytes.Length);
        while (reader.HasMore)
        {
            int field = reader.ReadTag(out int wire);
            if (field == 1) result.Behavior = reader.ReadString();
            else if (field == 2) result.Task = reader.ReadString();
            else if (field == 3) result.After = reader.ReadVarint();
            else reader.SkipField(wire);
        }
        return result;
    }

    // -------------------------------------------------------------------- scripted transport

    private sealed class Sent
    {
        public byte[] Request;
        public AdaptationCall Call;
        public DateTime SentUtc;
    }

    private sealed class StreamScript
    {
        public readonly List<KeyValuePair<string, object>> Steps = new List<KeyValuePair<string, object>>();
        public StreamScript Yield(string b64) { Steps.Add(new KeyValuePair<string, object>("yield", Convert.FromBase64String(b64))); return this; }
        public StreamScript Delay(int ms) { Steps.Add(new KeyValuePair<string, object>("delay", ms)); return this; }
        public StreamScript Fail(AdaptationStatus status, string detail) { Steps.Add(new KeyValuePair<string, object>("fail", new AdaptationRpcException(status, detail))); return this; }
        public StreamScript FailAtDeadline() { Steps.Add(new KeyValuePair<string, object>("deadline", null)); return this; }
        public StreamScript BlockUntilCancelled() { Steps.Add(new KeyValuePair<string, object>("block", null)); return this; }
        public StreamScript End() { return this; }
    }

    private sealed class ScriptedTransport : IAdaptationTransport
    {
        public readonly Queue<StreamScript> Streams = new Queue<StreamScript>();
        public readonly Queue<object> AdaptAnswers = new Queue<object>();
        public readonly List<Sent> SubscribeRequests = new List<Sent>();
        public readonly List<Sent> AdaptRequests = new List<Sent>();
        public volatile bool Disposed;
        public int CancelledStreams;
        public int Delivered;

        public Task<byte[]> AdaptAsync(byte[] request, AdaptationCall call)
        {
            object answer;
            lock (this)
            {
                AdaptRequests.Add(new Sent { Request = request, Call = call, SentUtc = DateTime.UtcNow });
                answer = AdaptAnswers.Count > 0 ? AdaptAnswers.Dequeue() : new AdaptationRpcException(AdaptationStatus.Unavailable, "no scripted answer");
            }
            var error = answer as Exception;
            if (error != null) return Task.Run(new Func<byte[]>(() => { throw error; }));
            return Task.FromResult((byte[])answer);
        }

        public IEnvelopeStream Subscribe(byte[] request, AdaptationCall call)
        {
            StreamScript script;
            lock (this)
            {
                SubscribeRequests.Add(new Sent { Request = request, Call = call, SentUtc = DateTime.UtcNow });
                script = Streams.Count > 0 ? Streams.Dequeue() : new StreamScript().Fail(AdaptationStatus.Unavailable, "no scripted stream");
            }
            return new ScriptedStream(this, script, call);
        }

        public void Dispose() { Disposed = true; }

        private sealed class ScriptedStream : IEnvelopeStream
        {
            private readonly ScriptedTransport _owner;
            private readonly StreamScript _script;
            private readonly AdaptationCall _call;
            private int _next;

            public ScriptedStream(ScriptedTransport owner, StreamScript script, AdaptationCall call) { _owner = owner; _script = script; _call = call; }

            public byte[] Current { get; private set; }

            public async Task<bool> MoveNextAsync(CancellationToken cancellation)
            {
                while (_next < _script.Steps.Count)
                {
                    var step = _script.Steps[_next++];
                    switch (step.Key)
                    {
                        case "yield": Current = (byte[])step.Value; Interlocked.Increment(ref _owner.Delivered); return true;
                        case "delay": await Task.Delay((int)step.Value, cancellation).ConfigureAwait(false); break;
                        case "fail": throw (Exception)step.Value;
                        case "deadline":
                            var wait = _call.DeadlineUtc.Value - DateTime.UtcNow;
                            if (wait > TimeSpan.Zero) await Task.Delay(wait, cancellation).ConfigureAwait(false);
                            throw new AdaptationRpcException(AdaptationStatus.DeadlineExceeded, "Deadline Exceeded");
                        case "block":
                            try { await Task.Delay(Timeout.Infinite, cancellation).ConfigureAwait(false); }
                            catch (OperationCanceledException)
                            {
                                Interlocked.Increment(ref _owner.CancelledStreams);
                                throw new AdaptationRpcException(AdaptationStatus.Cancelled, "Cancelled");
                            }
                            break;
                    }
                }
                return false;
            }

            public void Dispose() { }
        }
    }

    private static bool Throws<T>(Action action) where T : Exception
    {
        try { action(); return false; }
        catch (T) { return true; }
    }

    /// <summary>A flat JSON object of string values (what the test writes).</summary>
    private static Dictionary<string, string> ParseVectors(string json)
    {
        var result = new Dictionary<string, string>();
        int i = json.IndexOf('{') + 1;
        while (true)
        {
            int keyStart = json.IndexOf('"', i);
            if (keyStart < 0) break;
            int keyEnd = json.IndexOf('"', keyStart + 1);
            int valueStart = json.IndexOf('"', json.IndexOf(':', keyEnd) + 1);
            var value = new StringBuilder();
            int j = valueStart + 1;
            for (; json[j] != '"'; j++)
            {
                if (json[j] == '\\')
                {
                    j++;
                    value.Append(json[j] == 'n' ? '\n' : json[j]);
                }
                else value.Append(json[j]);
            }
            result[json.Substring(keyStart + 1, keyEnd - keyStart - 1)] = value.ToString();
            i = j + 1;
        }
        return result;
    }

    // -------------------------------------------------------------------------- encode

    /// <summary>Deterministic experience: Python rebuilds the same numbers and compares.</summary>
    private static void Encode(string outDir)
    {
        Directory.CreateDirectory(outDir);
        File.WriteAllBytes(Path.Combine(outDir, "subscribe.bin"), AdaptationWire.EncodeSubscribeRequest("AvatarAgent", "greet/3", 42));
        var episodes = new List<byte[]>();
        for (int e = 0; e < 2; e++)
        {
            var recorder = EpisodeRecorder.ForAvatarContract();
            int steps = 3 + 2 * e;
            for (int t = 0; t < steps; t++)
            {
                var obs = new float[AvatarContract.ObservationSize];
                for (int i = 0; i < AvatarContract.ObservationSize; i++) obs[i] = (float)(e + 0.25 * t - 0.01 * i);
                var cont = new[] { (float)(0.1 * t - 0.3), (float)(-0.2 * e + 0.05 * t) };
                var disc = new[] { (t + e) % 4 };
                var mask = new[] { false, t % 2 == 1, t % 2 == 1, t % 3 == 2 };
                recorder.AddStep(obs, cont, disc, mask, (float)(0.5 * t - e));
            }
            recorder.Interrupted = e == 1;
            episodes.Add(recorder.Encode());
        }
        File.WriteAllBytes(Path.Combine(outDir, "adapt.bin"), AdaptationWire.EncodeAdaptRequest("AvatarAgent", "greet/3", episodes, true, 7));
        Check("encode-written", true, outDir);
        var rec = EpisodeRecorder.ForAvatarContract();
        Check("recorder-refuses-nan", Throws<ArgumentException>(() => rec.AddStep(Enumerable.Repeat(float.NaN, AvatarContract.ObservationSize).ToArray(), new float[2], new int[1], new bool[4], 0f))
            && Throws<ArgumentException>(() => rec.AddStep(new float[AvatarContract.ObservationSize - 1], new float[2], new int[1], new bool[4], 0f))
            && Throws<InvalidOperationException>(() => rec.Encode()));
    }

    // -------------------------------------------------------------------------- editor

    private static void EditorChecks(string workDir)
    {
        if (TrainerProcess.IsWindows) { Check("editor-posix-only", true, "skipped on Windows"); return; }
        string bin = Path.Combine(workDir, "venv dir with spaces");
        Directory.CreateDirectory(bin);
        string fake = Path.Combine(bin, "avatar-meta");
        // Python, not sh: dash can miss a trapped SIGINT that lands while it forks `sleep`
        // (seen once under load), and Python's handler runs at the next bytecode.
        File.WriteAllText(fake, "#!/usr/bin/env python3\nimport os, signal, sys, time\n"
            + "def stop(*_):\n    print('GOT-INT', flush=True)\n    sys.exit(130)\n"
            + "signal.signal(signal.SIGINT, stop)\n"
            + "for a in sys.argv[1:]:\n    print('ARG<' + a + '>', flush=True)\n"
            + "print('CWD<' + os.getcwd() + '>', flush=True)\nprint('READY', flush=True)\n"
            + "while True:\n    time.sleep(0.05)\n");
        Process.Start("chmod", "+x '" + fake + "'").WaitForExit();
        string config = Path.Combine(workDir, "it's a \"config\" $HOME `x`; rm -rf nothing.yaml");
        var launch = new TrainerLaunch
        {
            Executable = fake,
            WorkingDirectory = workDir,
            Config = config,
            RunId = "editor-run_1",
            Force = true,
            LogPath = Path.Combine(Path.Combine(workDir, "Library dir"), "trainer.log"),
        };
        var args = TrainerProcess.Arguments(launch);
        Check("trainer-arguments", string.Join("|", args.ToArray()) == "train|" + config + "|--run-id|editor-run_1|--editor|--force", string.Join("|", args.ToArray()));
        var python = new TrainerLaunch { Executable = "/venv/bin/python3", RunId = "r", LogPath = "x.log" };
        Check("trainer-python-module", string.Join(" ", TrainerProcess.Arguments(python).ToArray()) == "-m avatar_meta.cli train --run-id r --editor");
        Check("trainer-validates", Throws<ArgumentException>(() => TrainerProcess.Arguments(new TrainerLaunch { Executable = fake, RunId = "../escape", LogPath = "x" }))
            && Throws<ArgumentException>(() => TrainerProcess.Arguments(new TrainerLaunch { Executable = fake, RunId = "a b", LogPath = "x" }))
            && Throws<ArgumentException>(() => TrainerProcess.Arguments(new TrainerLaunch { Executable = fake, RunId = "r", Resume = true, Force = true, LogPath = "x" }))
            && Throws<ArgumentException>(() => TrainerProcess.Arguments(new TrainerLaunch { Executable = "", RunId = "r", LogPath = "x" })));

        var trainer = TrainerProcess.Start(launch);
        string log = WaitForLog(launch.LogPath, "READY", TimeSpan.FromSeconds(10));
        var got = log.Split('\n').Where(l => l.StartsWith("ARG<")).Select(l => l.Substring(4, l.Length - 5)).ToList();
        Check("trainer-argv-exact", got.SequenceEqual(args), string.Join("|", got.ToArray()));
        Check("trainer-working-directory", log.Contains("CWD<" + Path.GetFullPath(workDir).TrimEnd('/') + ">"));
        Check("trainer-log-header", log.StartsWith("=== "));
        // The shell exec'd the trainer: the PID we hold is the trainer itself, not a wrapper.
        string cmdline = File.Exists("/proc/" + trainer.Id + "/cmdline") ? File.ReadAllText("/proc/" + trainer.Id + "/cmdline").Replace('\0', ' ') : fake;
        Check("trainer-single-process", !trainer.HasExited && cmdline.Contains(fake) && !cmdline.Contains("log=$1"), "pid " + trainer.Id + ": " + cmdline);
        using (var attached = TrainerProcess.Attach(trainer.Id, trainer.StartTimeUtc, launch.LogPath))
            Check("trainer-attach", attached != null && !attached.HasExited);
        Check("trainer-attach-refuses-recycled-pid", TrainerProcess.Attach(trainer.Id, trainer.StartTimeUtc.AddHours(-1), launch.LogPath) == null);
        Check("trainer-attach-gone", TrainerProcess.Attach(int.MaxValue - 7, DateTime.UtcNow, launch.LogPath) == null);
        Check("trainer-tail", TrainerProcess.ReadTail(launch.LogPath, 16).EndsWith("READY\n"), TrainerProcess.ReadTail(launch.LogPath, 16).Replace("\n", "\\n"));
        trainer.RequestStop();
        var watch = Stopwatch.StartNew();
        while (!trainer.PollStop(TimeSpan.FromSeconds(10)) && watch.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
        Check("trainer-stop-sigint", trainer.HasExited && trainer.ExitCode == 130 && WaitForLog(launch.LogPath, "GOT-INT", TimeSpan.FromSeconds(2)).Contains("GOT-INT"),
            "exit " + trainer.ExitCode + " after " + F(watch.Elapsed.TotalSeconds) + " s");
        trainer.Dispose();

        string stubborn = Path.Combine(bin, "stubborn");
        File.WriteAllText(stubborn, "#!/bin/sh\ntrap '' INT\necho READY\nwhile true; do sleep 0.05; done\n");
        Process.Start("chmod", "+x '" + stubborn + "'").WaitForExit();
        var stubbornLaunch = new TrainerLaunch { Executable = stubborn, WorkingDirectory = workDir, RunId = "s", LogPath = Path.Combine(workDir, "stubborn.log") };
        var second = TrainerProcess.Start(stubbornLaunch);
        WaitForLog(stubbornLaunch.LogPath, "READY", TimeSpan.FromSeconds(10));
        second.RequestStop();
        watch.Restart();
        while (!second.PollStop(TimeSpan.FromMilliseconds(300)) && watch.Elapsed < TimeSpan.FromSeconds(10)) Thread.Sleep(20);
        Check("trainer-kill-after-grace", second.HasExited && watch.Elapsed >= TimeSpan.FromMilliseconds(280), F(watch.Elapsed.TotalSeconds) + " s");
        second.Dispose();

        ExportChecks(workDir);
    }

    private static string WaitForLog(string path, string marker, TimeSpan timeout)
    {
        var watch = Stopwatch.StartNew();
        string text = "";
        while (watch.Elapsed < timeout)
        {
            text = File.Exists(path) ? TrainerProcess.ReadTail(path, 1 << 16) : "";
            if (text.Contains(marker)) break;
            Thread.Sleep(20);
        }
        return text;
    }

    private static void ExportChecks(string workDir)
    {
        string run = Path.Combine(Path.Combine(workDir, "results"), "demo");
        Directory.CreateDirectory(Path.Combine(run, "keys"));
        File.WriteAllBytes(Path.Combine(run, "AvatarAgent.onnx"), new byte[] { 1, 2, 3 });
        File.WriteAllBytes(Path.Combine(run, "AvatarAgent.weights.bin"), new byte[] { 4, 5 });
        File.WriteAllText(Path.Combine(Path.Combine(run, "keys"), "public.pem"), "PUBLIC");
        File.WriteAllText(Path.Combine(Path.Combine(run, "keys"), "private.pem"), "PRIVATE");
        string project = Path.Combine(workDir, "unity project");
        Directory.CreateDirectory(Path.Combine(project, "Assets"));
        var written = PolicyExport.Execute(project, PolicyExport.Plan(run, project, "AvatarMeta/demo"));
        Check("export-paths", string.Join(",", written.ToArray()) == "Assets/AvatarMeta/demo/AvatarAgent.onnx,Assets/AvatarMeta/demo/AvatarAgent.weights.bytes,Assets/AvatarMeta/demo/public.pem.txt",
            string.Join(",", written.ToArray()));
        string dest = Path.Combine(project, "Assets/AvatarMeta/demo");
        Check("export-content", File.ReadAllBytes(Path.Combine(dest, "AvatarAgent.onnx")).SequenceEqual(new byte[] { 1, 2, 3 })
            && File.ReadAllBytes(Path.Combine(dest, "AvatarAgent.weights.bytes")).SequenceEqual(new byte[] { 4, 5 })
            && File.ReadAllText(Path.Combine(dest, "public.pem.txt")) == "PUBLIC");
        Check("export-never-private-key", !Directory.GetFiles(dest).Any(f => File.ReadAllText(f).Contains("PRIVATE")) && Directory.GetFiles(dest).Length == 3,
            string.Join(",", Directory.GetFiles(dest).Select(Path.GetFileName).ToArray()));
        PolicyExport.Execute(project, PolicyExport.Plan(run, project, "AvatarMeta/demo"));
        Check("export-overwrites", Directory.GetFiles(dest).Length == 3);
        Check("export-stays-in-assets", Throws<ArgumentException>(() => PolicyExport.Plan(run, project, "../../escape"))
            && Throws<ArgumentException>(() => PolicyExport.WriteAsset(project, "x", "../evil.onnx", new byte[] { 1 })));
        Check("export-needs-files", Throws<ArgumentException>(() => PolicyExport.Plan(Path.Combine(workDir, "results"), project, "x")));
        string onnxPath = PolicyExport.WriteAsset(project, "AvatarMeta/adapted", "AvatarAgent.v7.onnx", new byte[] { 9 });
        Check("export-adapted-onnx", onnxPath == "Assets/AvatarMeta/adapted/AvatarAgent.v7.onnx" && File.ReadAllBytes(Path.Combine(project, onnxPath))[0] == 9, onnxPath);
    }
}
