// Compile-only stub of the one System.Interactive.Async type the package reaches through
// Grpc.Core: com.unity.ml-agents 3.0.0 ships Plugins/ProtoBuffer/System.Interactive.Async.dll
// (version 3.1.1, explicitly referenced only), whose IAsyncEnumerator<T> is the base interface
// of Grpc.Core 1.10's IAsyncStreamReader<T>. Checked against that assembly by reflection.
// No source file of the package names this type (it would clash with .NET Standard 2.1's own
// System.Collections.Generic.IAsyncEnumerator<T> in Unity); it is only called through
// IAsyncStreamReader<T>.
using System.Threading;
using System.Threading.Tasks;

namespace System.Collections.Generic
{
    public interface IAsyncEnumerator<out T> : IDisposable
    {
        T Current { get; }
        Task<bool> MoveNext(CancellationToken cancellationToken);
    }
}
