// Compile-only stub of the Grpc.Core API used by com.avatarmeta.agents (AdaptationClient).
// The real assembly is com.unity.ml-agents 3.0.0's Plugins/ProtoBuffer/Grpc.Core.dll, which is
// Grpc.Core 1.10.0 (AssemblyInformationalVersion "1.10.0", net45; CallInvoker, Method<,> and
// Metadata live in Grpc.Core itself: there is no Grpc.Core.Api in that release). Names,
// namespaces and signatures below were checked against that assembly by reflection; only the
// members the package uses are declared. No behaviour: every body throws.
extern alias InteractiveAsync;
using System;
using System.Collections;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace Grpc.Core
{
    public enum StatusCode
    {
        OK = 0, Cancelled = 1, Unknown = 2, InvalidArgument = 3, DeadlineExceeded = 4, NotFound = 5,
        AlreadyExists = 6, PermissionDenied = 7, ResourceExhausted = 8, FailedPrecondition = 9,
        Aborted = 10, OutOfRange = 11, Unimplemented = 12, Internal = 13, Unavailable = 14,
        DataLoss = 15, Unauthenticated = 16,
    }

    public struct Status
    {
        public Status(StatusCode statusCode, string detail) { throw new NotImplementedException(); }
        public StatusCode StatusCode { get { throw new NotImplementedException(); } }
        public string Detail { get { throw new NotImplementedException(); } }
    }

    public class RpcException : Exception
    {
        public RpcException(Status status) { throw new NotImplementedException(); }
        public RpcException(Status status, string message) { throw new NotImplementedException(); }
        public Status Status { get { throw new NotImplementedException(); } }
        public Metadata Trailers { get { throw new NotImplementedException(); } }
    }

    public sealed class Metadata : IList<Metadata.Entry>
    {
        public const string BinaryHeaderSuffix = "-bin";
        public static readonly Metadata Empty = null;

        public Metadata() { throw new NotImplementedException(); }
        public void Add(string key, string value) { throw new NotImplementedException(); }
        public void Add(string key, byte[] valueBytes) { throw new NotImplementedException(); }

        public Entry this[int index] { get { throw new NotImplementedException(); } set { throw new NotImplementedException(); } }
        public int Count { get { throw new NotImplementedException(); } }
        public bool IsReadOnly { get { throw new NotImplementedException(); } }
        public int IndexOf(Entry item) { throw new NotImplementedException(); }
        public void Insert(int index, Entry item) { throw new NotImplementedException(); }
        public void RemoveAt(int index) { throw new NotImplementedException(); }
        public void Add(Entry item) { throw new NotImplementedException(); }
        public void Clear() { throw new NotImplementedException(); }
        public bool Contains(Entry item) { throw new NotImplementedException(); }
        public void CopyTo(Entry[] array, int arrayIndex) { throw new NotImplementedException(); }
        public bool Remove(Entry item) { throw new NotImplementedException(); }
        public IEnumerator<Entry> GetEnumerator() { throw new NotImplementedException(); }
        IEnumerator IEnumerable.GetEnumerator() { throw new NotImplementedException(); }

        public class Entry
        {
            public Entry(string key, byte[] valueBytes) { throw new NotImplementedException(); }
            public Entry(string key, string value) { throw new NotImplementedException(); }
            public string Key { get { throw new NotImplementedException(); } }
            public byte[] ValueBytes { get { throw new NotImplementedException(); } }
            public string Value { get { throw new NotImplementedException(); } }
            public bool IsBinary { get { throw new NotImplementedException(); } }
        }
    }

    public enum MethodType { Unary, ClientStreaming, ServerStreaming, DuplexStreaming }

    public interface IMethod
    {
        MethodType Type { get; }
        string ServiceName { get; }
        string Name { get; }
        string FullName { get; }
    }

    public class Marshaller<T>
    {
        public Marshaller(Func<T, byte[]> serializer, Func<byte[], T> deserializer) { throw new NotImplementedException(); }
        public Func<T, byte[]> Serializer { get { throw new NotImplementedException(); } }
        public Func<byte[], T> Deserializer { get { throw new NotImplementedException(); } }
    }

    public static class Marshallers
    {
        public static Marshaller<T> Create<T>(Func<T, byte[]> serializer, Func<byte[], T> deserializer) { throw new NotImplementedException(); }
    }

    public class Method<TRequest, TResponse> : IMethod
    {
        public Method(MethodType type, string serviceName, string name, Marshaller<TRequest> requestMarshaller, Marshaller<TResponse> responseMarshaller) { throw new NotImplementedException(); }
        public MethodType Type { get { throw new NotImplementedException(); } }
        public string ServiceName { get { throw new NotImplementedException(); } }
        public string Name { get { throw new NotImplementedException(); } }
        public Marshaller<TRequest> RequestMarshaller { get { throw new NotImplementedException(); } }
        public Marshaller<TResponse> ResponseMarshaller { get { throw new NotImplementedException(); } }
        public string FullName { get { throw new NotImplementedException(); } }
    }

    public class WriteOptions
    {
        internal WriteOptions() { }
    }

    public class ContextPropagationToken
    {
        internal ContextPropagationToken() { }
    }

    public abstract class CallCredentials { }

    public struct CallOptions
    {
        public CallOptions(Metadata headers = null, DateTime? deadline = null, CancellationToken cancellationToken = default(CancellationToken), WriteOptions writeOptions = null, ContextPropagationToken propagationToken = null, CallCredentials credentials = null) { throw new NotImplementedException(); }
        public Metadata Headers { get { throw new NotImplementedException(); } }
        public DateTime? Deadline { get { throw new NotImplementedException(); } }
        public CancellationToken CancellationToken { get { throw new NotImplementedException(); } }
        public CallOptions WithWaitForReady(bool waitForReady = true) { throw new NotImplementedException(); }
    }

    /// <summary>In Grpc.Core 1.10 this extends System.Interactive.Async's IAsyncEnumerator&lt;T&gt;
    /// (MoveNext(CancellationToken), Current). mono's mscorlib, like .NET Standard 2.1, has its own
    /// System.Collections.Generic.IAsyncEnumerator&lt;T&gt;, hence the extern alias (build.sh passes
    /// -r:InteractiveAsync=System.Interactive.Async.dll for this stub only).</summary>
    public interface IAsyncStreamReader<T> : InteractiveAsync::System.Collections.Generic.IAsyncEnumerator<T> { }

    public sealed class AsyncUnaryCall<TResponse> : IDisposable
    {
        internal AsyncUnaryCall() { }
        public Task<TResponse> ResponseAsync { get { throw new NotImplementedException(); } }
        public Task<Metadata> ResponseHeadersAsync { get { throw new NotImplementedException(); } }
        public Status GetStatus() { throw new NotImplementedException(); }
        public Metadata GetTrailers() { throw new NotImplementedException(); }
        public void Dispose() { throw new NotImplementedException(); }
    }

    public sealed class AsyncServerStreamingCall<TResponse> : IDisposable
    {
        internal AsyncServerStreamingCall() { }
        public IAsyncStreamReader<TResponse> ResponseStream { get { throw new NotImplementedException(); } }
        public Task<Metadata> ResponseHeadersAsync { get { throw new NotImplementedException(); } }
        public Status GetStatus() { throw new NotImplementedException(); }
        public Metadata GetTrailers() { throw new NotImplementedException(); }
        public void Dispose() { throw new NotImplementedException(); }
    }

    public abstract class CallInvoker
    {
        public abstract AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request)
            where TRequest : class where TResponse : class;
        public abstract AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request)
            where TRequest : class where TResponse : class;
    }

    public class DefaultCallInvoker : CallInvoker
    {
        public DefaultCallInvoker(Channel channel) { throw new NotImplementedException(); }
        public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request) { throw new NotImplementedException(); }
        public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(Method<TRequest, TResponse> method, string host, CallOptions options, TRequest request) { throw new NotImplementedException(); }
    }

    public abstract class ChannelCredentials
    {
        public static ChannelCredentials Insecure { get { throw new NotImplementedException(); } }
    }

    public sealed class SslCredentials : ChannelCredentials
    {
        public SslCredentials() { throw new NotImplementedException(); }
        public SslCredentials(string rootCertificates) { throw new NotImplementedException(); }
    }

    public sealed class ChannelOption
    {
        public ChannelOption(string name, string stringValue) { throw new NotImplementedException(); }
        public ChannelOption(string name, int intValue) { throw new NotImplementedException(); }
    }

    public static class ChannelOptions
    {
        public const string MaxReceiveMessageLength = "grpc.max_receive_message_length";
        public const string MaxSendMessageLength = "grpc.max_send_message_length";
        public const string PrimaryUserAgentString = "grpc.primary_user_agent";
    }

    public enum ChannelState { Idle, Connecting, Ready, TransientFailure, Shutdown }

    public class Channel
    {
        public Channel(string target, ChannelCredentials credentials, IEnumerable<ChannelOption> options) { throw new NotImplementedException(); }
        public ChannelState State { get { throw new NotImplementedException(); } }
        public string Target { get { throw new NotImplementedException(); } }
        public Task ShutdownAsync() { throw new NotImplementedException(); }
    }
}
