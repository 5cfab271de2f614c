// The Grpc.Core side of the adaptation client. Grpc.Core (1.10, shipped by com.unity.ml-agents
// 3.0 in Plugins/ProtoBuffer) only runs in the Editor and in Windows, macOS and Linux players,
// so, like ML-Agents' RpcCommunicator, everything that touches it is compiled for those
// platforms only; elsewhere GrpcAdaptationTransport.IsSupported is false and constructing one
// throws PlatformNotSupportedException (fetch envelopes with your own networking and call
// StreamedPolicy.Load there).
using System;
using System.Threading;
using System.Threading.Tasks;
using Google.Protobuf;
using AvatarMeta.Proto;
#if UNITY_EDITOR || UNITY_STANDALONE_WIN || UNITY_STANDALONE_OSX || UNITY_STANDALONE_LINUX
using System.Collections.Generic;
using Grpc.Core;
#endif

namespace AvatarMeta
{
    /// <summary>Typed calls with the generated messages (Runtime/Proto), for callers that build requests with Google.Protobuf.</summary>
    public static class AdaptationClientProtoExtensions
    {
        /// <summary>Sends a generated <see cref="AdaptRequest"/> (serialised with Google.Protobuf) through <see cref="AdaptationClient.AdaptAsync"/>.</summary>
        public static Task<AdaptationResult> AdaptAsync(this AdaptationClient client, AdaptRequest request, CancellationToken cancellation = default(CancellationToken))
        {
            if (client == null) throw new ArgumentNullException(nameof(client));
            if (request == null) throw new ArgumentNullException(nameof(request));
            return client.AdaptAsync(request.ToByteArray(), cancellation);
        }
    }

#if UNITY_EDITOR || UNITY_STANDALONE_WIN || UNITY_STANDALONE_OSX || UNITY_STANDALONE_LINUX
    /// <summary>
    /// Hand-written gRPC method descriptors of <c>avatar_meta.v1.AdaptationService</c>
    /// (protos/avatar_meta/v1/adaptation_service.proto; Debian has no C# gRPC plugin to generate
    /// them). The <c>Raw</c> variants carry the serialised bytes untouched, which is what the
    /// client uses: the envelope it verifies is exactly the one the server signed and sent.
    /// </summary>
    public static class AdaptationServiceMethods
    {
        /// <summary>Full protobuf name of the service.</summary>
        public const string ServiceName = "avatar_meta.v1.AdaptationService";

        private static readonly Marshaller<byte[]> s_Bytes = Marshallers.Create<byte[]>(bytes => bytes, bytes => bytes);

        /// <summary>rpc Adapt(AdaptRequest) returns (AdaptResponse), as bytes.</summary>
        public static readonly Method<byte[], byte[]> AdaptRaw = new Method<byte[], byte[]>(MethodType.Unary, ServiceName, "Adapt", s_Bytes, s_Bytes);
        /// <summary>rpc Subscribe(SubscribeRequest) returns (stream PolicyWeightsEnvelope), as bytes.</summary>
        public static readonly Method<byte[], byte[]> SubscribeRaw = new Method<byte[], byte[]>(MethodType.ServerStreaming, ServiceName, "Subscribe", s_Bytes, s_Bytes);
        /// <summary>rpc Stats(StatsRequest) returns (StatsResponse), as bytes.</summary>
        public static readonly Method<byte[], byte[]> StatsRaw = new Method<byte[], byte[]>(MethodType.Unary, ServiceName, "Stats", s_Bytes, s_Bytes);

        /// <summary>rpc Adapt with the generated messages.</summary>
        public static readonly Method<AdaptRequest, AdaptResponse> Adapt = new Method<AdaptRequest, AdaptResponse>(
            MethodType.Unary, ServiceName, "Adapt",
            Marshallers.Create<AdaptRequest>(message => message.ToByteArray(), AdaptRequest.Parser.ParseFrom),
            Marshallers.Create<AdaptResponse>(message => message.ToByteArray(), AdaptResponse.Parser.ParseFrom));
        /// <summary>rpc Subscribe with the generated messages.</summary>
        public static readonly Method<SubscribeRequest, PolicyWeightsEnvelope> Subscribe = new Method<SubscribeRequest, PolicyWeightsEnvelope>(
            MethodType.ServerStreaming, ServiceName, "Subscribe",
            Marshallers.Create<SubscribeRequest>(message => message.ToByteArray(), SubscribeRequest.Parser.ParseFrom),
            Marshallers.Create<PolicyWeightsEnvelope>(message => message.ToByteArray(), PolicyWeightsEnvelope.Parser.ParseFrom));
        /// <summary>rpc Stats with the generated messages.</summary>
        public static readonly Method<StatsRequest, StatsResponse> Stats = new Method<StatsRequest, StatsResponse>(
            MethodType.Unary, ServiceName, "Stats",
            Marshallers.Create<StatsRequest>(message => message.ToByteArray(), StatsRequest.Parser.ParseFrom),
            Marshallers.Create<StatsResponse>(message => message.ToByteArray(), StatsResponse.Parser.ParseFrom));
    }

    /// <summary>
    /// <see cref="IAdaptationTransport"/> over a Grpc.Core <see cref="Channel"/> and
    /// <see cref="DefaultCallInvoker"/>: insecure on loopback, TLS (<see cref="SslCredentials"/>)
    /// otherwise; every call carries the client's metadata, deadline and cancellation token.
    /// </summary>
    public sealed class GrpcAdaptationTransport : IAdaptationTransport
    {
        /// <summary>User agent sent to the server.</summary>
        public const string UserAgent = "avatar-meta-unity/0.3.0";

        private readonly Channel _channel;
        private readonly CallInvoker _invoker;

        /// <summary>True where Grpc.Core runs (Editor, Windows/macOS/Linux players).</summary>
        public static bool IsSupported => true;

        /// <summary>Creates the channel (connects lazily, on the first call).</summary>
        public GrpcAdaptationTransport(AdaptationClientOptions options)
        {
            if (options == null) throw new ArgumentNullException(nameof(options));
            options.Validate();
            ChannelCredentials credentials;
            if (!options.UseTls) credentials = ChannelCredentials.Insecure;
            else if (string.IsNullOrEmpty(options.RootCertificatesPem)) credentials = new SslCredentials();
            else credentials = new SslCredentials(options.RootCertificatesPem);
            var channelOptions = new List<ChannelOption>
            {
                new ChannelOption(ChannelOptions.MaxReceiveMessageLength, options.MaxReceiveMessageBytes),
                new ChannelOption(ChannelOptions.PrimaryUserAgentString, UserAgent),
            };
            _channel = new Channel(options.Address, credentials, channelOptions);
            _invoker = new DefaultCallInvoker(_channel);
        }

        /// <summary>The channel's connectivity state (for status displays).</summary>
        public ChannelState ChannelState => _channel.State;

        /// <inheritdoc/>
        public async Task<byte[]> AdaptAsync(byte[] request, AdaptationCall call)
        {
            try
            {
                using (var pending = _invoker.AsyncUnaryCall(AdaptationServiceMethods.AdaptRaw, null, ToCallOptions(call), request))
                {
                    return await pending.ResponseAsync.ConfigureAwait(false);
                }
            }
            catch (RpcException err)
            {
                throw Translate(err);
            }
        }

        /// <inheritdoc/>
        public IEnvelopeStream Subscribe(byte[] request, AdaptationCall call)
        {
            try
            {
                return new EnvelopeStream(_invoker.AsyncServerStreamingCall(AdaptationServiceMethods.SubscribeRaw, null, ToCallOptions(call), request));
            }
            catch (RpcException err)
            {
                throw Translate(err);
            }
        }

        /// <summary>Starts shutting the channel down; does not wait (never blocks the main thread).</summary>
        public void Dispose()
        {
            _channel.ShutdownAsync().ContinueWith(t => { var ignored = t.Exception; }, TaskContinuationOptions.OnlyOnFaulted);
        }

        private static CallOptions ToCallOptions(AdaptationCall call)
        {
            var headers = new Metadata();
            if (call.Headers != null)
            {
                for (int i = 0; i < call.Headers.Count; i++) headers.Add(call.Headers[i].Key, call.Headers[i].Value);
            }
            return new CallOptions(headers, call.DeadlineUtc, call.Cancellation);
        }

        private static AdaptationRpcException Translate(RpcException err) =>
            new AdaptationRpcException((AdaptationStatus)(int)err.Status.StatusCode, err.Status.Detail, err);

        private sealed class EnvelopeStream : IEnvelopeStream
        {
            private readonly AsyncServerStreamingCall<byte[]> _call;

            public EnvelopeStream(AsyncServerStreamingCall<byte[]> call) { _call = call; }

            public byte[] Current => _call.ResponseStream.Current;

            public async Task<bool> MoveNextAsync(CancellationToken cancellation)
            {
                try
                {
                    return await _call.ResponseStream.MoveNext(cancellation).ConfigureAwait(false);
                }
                catch (RpcException err)
                {
                    throw Translate(err);
                }
            }

            /// <summary>Cancels the call if it is still running and releases it.</summary>
            public void Dispose() => _call.Dispose();
        }
    }
#else
    /// <summary>Grpc.Core does not run on this platform (only Editor, Windows, macOS, Linux).</summary>
    public sealed class GrpcAdaptationTransport : IAdaptationTransport
    {
        /// <summary>False: Grpc.Core is not available on this platform.</summary>
        public static bool IsSupported => false;

        /// <summary>Always throws <see cref="PlatformNotSupportedException"/>.</summary>
        public GrpcAdaptationTransport(AdaptationClientOptions options)
        {
            throw new PlatformNotSupportedException("the adaptation client needs Grpc.Core, which com.unity.ml-agents ships for the Editor and Windows/macOS/Linux players only; fetch envelopes with your own networking and call StreamedPolicy.Load");
        }

        /// <inheritdoc/>
        public Task<byte[]> AdaptAsync(byte[] request, AdaptationCall call) { throw new PlatformNotSupportedException(); }

        /// <inheritdoc/>
        public IEnvelopeStream Subscribe(byte[] request, AdaptationCall call) { throw new PlatformNotSupportedException(); }

        /// <inheritdoc/>
        public void Dispose() { }
    }
#endif
}
