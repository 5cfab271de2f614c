// Compile-only stub of the Google.Protobuf API that protoc 3.21's --csharp_out code uses
// (Runtime/Proto/*.cs). The real assembly is com.unity.ml-agents 3.0.0's
// Plugins/Google.Protobuf_Packed.dll: Google.Protobuf 3.21.12 (netstandard2.0, System.Memory
// packed in), the same release as Debian's protoc 3.21.12 that generated our messages. Names,
// namespaces and signatures below were checked against that assembly by reflection; only the
// members the generated code and the package use are declared. No behaviour: every body throws.
using System;
using System.Collections;
using System.Collections.Generic;

namespace Google.Protobuf
{
    public interface IDeepCloneable<T>
    {
        T Clone();
    }

    public interface IMessage
    {
        void MergeFrom(CodedInputStream input);
        void WriteTo(CodedOutputStream output);
        int CalculateSize();
        Reflection.MessageDescriptor Descriptor { get; }
    }

    public interface IMessage<T> : IMessage, IEquatable<T>, IDeepCloneable<T> where T : IMessage<T>
    {
        void MergeFrom(T message);
    }

    public interface IBufferMessage : IMessage
    {
        void InternalMergeFrom(ref ParseContext ctx);
        void InternalWriteTo(ref WriteContext ctx);
    }

    public sealed class ByteString : IEnumerable<byte>, IEquatable<ByteString>
    {
        private ByteString() { }
        public static ByteString Empty { get { throw new NotImplementedException(); } }
        public int Length { get { throw new NotImplementedException(); } }
        public bool IsEmpty { get { throw new NotImplementedException(); } }
        public static ByteString CopyFrom(byte[] bytes) { throw new NotImplementedException(); }
        public byte[] ToByteArray() { throw new NotImplementedException(); }
        public static bool operator ==(ByteString lhs, ByteString rhs) { throw new NotImplementedException(); }
        public static bool operator !=(ByteString lhs, ByteString rhs) { throw new NotImplementedException(); }
        public override bool Equals(object obj) { throw new NotImplementedException(); }
        public bool Equals(ByteString other) { throw new NotImplementedException(); }
        public override int GetHashCode() { throw new NotImplementedException(); }
        public IEnumerator<byte> GetEnumerator() { throw new NotImplementedException(); }
        IEnumerator IEnumerable.GetEnumerator() { throw new NotImplementedException(); }
    }

    public sealed class CodedInputStream : IDisposable
    {
        public CodedInputStream(byte[] buffer) { throw new NotImplementedException(); }
        public void ReadRawMessage(IMessage message) { throw new NotImplementedException(); }
        public void Dispose() { throw new NotImplementedException(); }
    }

    public sealed class CodedOutputStream : IDisposable
    {
        public CodedOutputStream(byte[] flatArray) { throw new NotImplementedException(); }
        public static int ComputeDoubleSize(double value) { throw new NotImplementedException(); }
        public static int ComputeUInt64Size(ulong value) { throw new NotImplementedException(); }
        public static int ComputeInt64Size(long value) { throw new NotImplementedException(); }
        public static int ComputeInt32Size(int value) { throw new NotImplementedException(); }
        public static int ComputeStringSize(string value) { throw new NotImplementedException(); }
        public static int ComputeMessageSize(IMessage value) { throw new NotImplementedException(); }
        public static int ComputeBytesSize(ByteString value) { throw new NotImplementedException(); }
        public static int ComputeEnumSize(int value) { throw new NotImplementedException(); }
        public void WriteRawMessage(IMessage value) { throw new NotImplementedException(); }
        public void Dispose() { throw new NotImplementedException(); }
    }

    public ref struct ParseContext
    {
        public uint ReadTag() { throw new NotImplementedException(); }
        public double ReadDouble() { throw new NotImplementedException(); }
        public ulong ReadUInt64() { throw new NotImplementedException(); }
        public long ReadInt64() { throw new NotImplementedException(); }
        public int ReadInt32() { throw new NotImplementedException(); }
        public bool ReadBool() { throw new NotImplementedException(); }
        public string ReadString() { throw new NotImplementedException(); }
        public void ReadMessage(IMessage message) { throw new NotImplementedException(); }
        public ByteString ReadBytes() { throw new NotImplementedException(); }
        public int ReadEnum() { throw new NotImplementedException(); }
    }

    public ref struct WriteContext
    {
        public void WriteDouble(double value) { throw new NotImplementedException(); }
        public void WriteUInt64(ulong value) { throw new NotImplementedException(); }
        public void WriteInt64(long value) { throw new NotImplementedException(); }
        public void WriteInt32(int value) { throw new NotImplementedException(); }
        public void WriteBool(bool value) { throw new NotImplementedException(); }
        public void WriteString(string value) { throw new NotImplementedException(); }
        public void WriteMessage(IMessage value) { throw new NotImplementedException(); }
        public void WriteBytes(ByteString value) { throw new NotImplementedException(); }
        public void WriteEnum(int value) { throw new NotImplementedException(); }
        public void WriteRawTag(byte b1) { throw new NotImplementedException(); }
        public void WriteRawTag(byte b1, byte b2) { throw new NotImplementedException(); }
        public void WriteRawTag(byte b1, byte b2, byte b3) { throw new NotImplementedException(); }
        public void WriteRawTag(byte b1, byte b2, byte b3, byte b4) { throw new NotImplementedException(); }
        public void WriteRawTag(byte b1, byte b2, byte b3, byte b4, byte b5) { throw new NotImplementedException(); }
    }

    public class MessageParser
    {
        internal MessageParser() { }
    }

    public sealed class MessageParser<T> : MessageParser where T : IMessage<T>
    {
        public MessageParser(Func<T> factory) { throw new NotImplementedException(); }
        public T ParseFrom(byte[] data) { throw new NotImplementedException(); }
    }

    public static class MessageExtensions
    {
        public static byte[] ToByteArray(this IMessage message) { throw new NotImplementedException(); }
    }

    public static class ProtoPreconditions
    {
        public static T CheckNotNull<T>(T value, string name) where T : class { throw new NotImplementedException(); }
    }

    public sealed class UnknownFieldSet
    {
        private UnknownFieldSet() { }
        public void WriteTo(CodedOutputStream output) { throw new NotImplementedException(); }
        public void WriteTo(ref WriteContext ctx) { throw new NotImplementedException(); }
        public int CalculateSize() { throw new NotImplementedException(); }
        public static UnknownFieldSet MergeFieldFrom(UnknownFieldSet unknownFields, CodedInputStream input) { throw new NotImplementedException(); }
        public static UnknownFieldSet MergeFieldFrom(UnknownFieldSet unknownFields, ref ParseContext ctx) { throw new NotImplementedException(); }
        public static UnknownFieldSet MergeFrom(UnknownFieldSet unknownFields, UnknownFieldSet other) { throw new NotImplementedException(); }
        public static UnknownFieldSet Clone(UnknownFieldSet other) { throw new NotImplementedException(); }
    }

    public sealed class JsonFormatter
    {
        private JsonFormatter() { }
        public static string ToDiagnosticString(IMessage message) { throw new NotImplementedException(); }
    }

    public sealed class FieldCodec<T>
    {
        private FieldCodec() { }
    }

    public static class FieldCodec
    {
        public static FieldCodec<string> ForString(uint tag, string defaultValue) { throw new NotImplementedException(); }
        public static FieldCodec<int> ForInt32(uint tag) { throw new NotImplementedException(); }
        public static FieldCodec<ulong> ForUInt64(uint tag) { throw new NotImplementedException(); }
        public static FieldCodec<ulong> ForUInt64(uint tag, ulong defaultValue) { throw new NotImplementedException(); }
        public static FieldCodec<float> ForFloat(uint tag) { throw new NotImplementedException(); }
        public static FieldCodec<double> ForDouble(uint tag) { throw new NotImplementedException(); }
        public static FieldCodec<T> ForMessage<T>(uint tag, MessageParser<T> parser) where T : class, IMessage<T> { throw new NotImplementedException(); }
    }
}

namespace Google.Protobuf.Collections
{
    public sealed class RepeatedField<T> : IList<T>, IEquatable<RepeatedField<T>>, IDeepCloneable<RepeatedField<T>>
    {
        public RepeatedField() { throw new NotImplementedException(); }
        public RepeatedField<T> Clone() { throw new NotImplementedException(); }
        public void AddEntriesFrom(CodedInputStream input, FieldCodec<T> codec) { throw new NotImplementedException(); }
        public void AddEntriesFrom(ref ParseContext ctx, FieldCodec<T> codec) { throw new NotImplementedException(); }
        public int CalculateSize(FieldCodec<T> codec) { throw new NotImplementedException(); }
        public void WriteTo(CodedOutputStream output, FieldCodec<T> codec) { throw new NotImplementedException(); }
        public void WriteTo(ref WriteContext ctx, FieldCodec<T> codec) { throw new NotImplementedException(); }
        public void Add(IEnumerable<T> values) { throw new NotImplementedException(); }
        public void AddRange(IEnumerable<T> values) { throw new NotImplementedException(); }
        public T this[int index] { get { throw new NotImplementedException(); } set { throw new NotImplementedException(); } }
        public int Count { get { throw new NotImplementedException(); } }
        public bool IsReadOnly { get { throw new NotImplementedException(); } }
        public void Add(T item) { throw new NotImplementedException(); }
        public void Clear() { throw new NotImplementedException(); }
        public bool Contains(T item) { throw new NotImplementedException(); }
        public void CopyTo(T[] array, int arrayIndex) { throw new NotImplementedException(); }
        public bool Remove(T item) { throw new NotImplementedException(); }
        public int IndexOf(T item) { throw new NotImplementedException(); }
        public void Insert(int index, T item) { throw new NotImplementedException(); }
        public void RemoveAt(int index) { throw new NotImplementedException(); }
        public IEnumerator<T> GetEnumerator() { throw new NotImplementedException(); }
        IEnumerator IEnumerable.GetEnumerator() { throw new NotImplementedException(); }
        public bool Equals(RepeatedField<T> other) { throw new NotImplementedException(); }
        public override bool Equals(object obj) { throw new NotImplementedException(); }
        public override int GetHashCode() { throw new NotImplementedException(); }
    }

    public sealed class MapField<TKey, TValue> : IDictionary<TKey, TValue>, IEquatable<MapField<TKey, TValue>>, IDeepCloneable<MapField<TKey, TValue>>
    {
        public MapField() { throw new NotImplementedException(); }
        public MapField<TKey, TValue> Clone() { throw new NotImplementedException(); }
        public void Add(IDictionary<TKey, TValue> entries) { throw new NotImplementedException(); }
        public void AddEntriesFrom(CodedInputStream input, Codec codec) { throw new NotImplementedException(); }
        public void AddEntriesFrom(ref ParseContext ctx, Codec codec) { throw new NotImplementedException(); }
        public void WriteTo(CodedOutputStream output, Codec codec) { throw new NotImplementedException(); }
        public void WriteTo(ref WriteContext ctx, Codec codec) { throw new NotImplementedException(); }
        public int CalculateSize(Codec codec) { throw new NotImplementedException(); }
        public TValue this[TKey key] { get { throw new NotImplementedException(); } set { throw new NotImplementedException(); } }
        public ICollection<TKey> Keys { get { throw new NotImplementedException(); } }
        public ICollection<TValue> Values { get { throw new NotImplementedException(); } }
        public int Count { get { throw new NotImplementedException(); } }
        public bool IsReadOnly { get { throw new NotImplementedException(); } }
        public void Add(TKey key, TValue value) { throw new NotImplementedException(); }
        public bool ContainsKey(TKey key) { throw new NotImplementedException(); }
        public bool Remove(TKey key) { throw new NotImplementedException(); }
        public bool TryGetValue(TKey key, out TValue value) { throw new NotImplementedException(); }
        public void Clear() { throw new NotImplementedException(); }
        void ICollection<KeyValuePair<TKey, TValue>>.Add(KeyValuePair<TKey, TValue> item) { throw new NotImplementedException(); }
        bool ICollection<KeyValuePair<TKey, TValue>>.Contains(KeyValuePair<TKey, TValue> item) { throw new NotImplementedException(); }
        void ICollection<KeyValuePair<TKey, TValue>>.CopyTo(KeyValuePair<TKey, TValue>[] array, int arrayIndex) { throw new NotImplementedException(); }
        bool ICollection<KeyValuePair<TKey, TValue>>.Remove(KeyValuePair<TKey, TValue> item) { throw new NotImplementedException(); }
        public IEnumerator<KeyValuePair<TKey, TValue>> GetEnumerator() { throw new NotImplementedException(); }
        IEnumerator IEnumerable.GetEnumerator() { throw new NotImplementedException(); }
        public bool Equals(MapField<TKey, TValue> other) { throw new NotImplementedException(); }
        public override bool Equals(object other) { throw new NotImplementedException(); }
        public override int GetHashCode() { throw new NotImplementedException(); }

        public sealed class Codec
        {
            public Codec(FieldCodec<TKey> keyCodec, FieldCodec<TValue> valueCodec, uint mapTag) { throw new NotImplementedException(); }
        }
    }

    public static class ProtobufEqualityComparers
    {
        public static EqualityComparer<double> BitwiseDoubleEqualityComparer { get { throw new NotImplementedException(); } }
        public static EqualityComparer<float> BitwiseSingleEqualityComparer { get { throw new NotImplementedException(); } }
    }
}

namespace Google.Protobuf.Reflection
{
    public sealed class FileDescriptor
    {
        private FileDescriptor() { }
        public IList<MessageDescriptor> MessageTypes { get { throw new NotImplementedException(); } }
        public static FileDescriptor FromGeneratedCode(byte[] descriptorData, FileDescriptor[] dependencies, GeneratedClrTypeInfo generatedCodeInfo) { throw new NotImplementedException(); }
    }

    public sealed class MessageDescriptor
    {
        private MessageDescriptor() { }
        public string Name { get { throw new NotImplementedException(); } }
        public IList<MessageDescriptor> NestedTypes { get { throw new NotImplementedException(); } }
    }

    public sealed class GeneratedClrTypeInfo
    {
        public GeneratedClrTypeInfo(Type clrType, MessageParser parser, string[] propertyNames, string[] oneofNames, Type[] nestedEnums, Extension[] extensions, GeneratedClrTypeInfo[] nestedTypes) { throw new NotImplementedException(); }
        public GeneratedClrTypeInfo(Type[] nestedEnums, Extension[] extensions, GeneratedClrTypeInfo[] nestedTypes) { throw new NotImplementedException(); }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public class OriginalNameAttribute : Attribute
    {
        public OriginalNameAttribute(string name) { }
        public string Name { get { throw new NotImplementedException(); } set { throw new NotImplementedException(); } }
        public bool PreferredAlias { get { throw new NotImplementedException(); } set { throw new NotImplementedException(); } }
    }
}

namespace Google.Protobuf
{
    /// <summary>Only named (as null) by generated reflection code: GeneratedClrTypeInfo's extensions argument.</summary>
    public abstract class Extension
    {
        internal Extension() { }
    }
}
