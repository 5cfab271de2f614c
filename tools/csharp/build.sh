#!/usr/bin/env bash
# Compiles the Unity package's C# with Debian's mono `mcs` (no Unity Editor needed):
#  1. stub assemblies (tools/csharp/stubs/: UnityEngine, UnityEditor, Unity.ML-Agents, NUnit, and
#     the three assemblies com.unity.ml-agents 3.0.0 ships for gRPC: Google.Protobuf_Packed
#     (Google.Protobuf 3.21.12), Grpc.Core (1.10.0), System.Interactive.Async) - declarations only;
#  2. AvatarMeta.Runtime.dll: EVERY Runtime/**/*.cs, the generated Proto/ messages included, as
#     the Editor compiles it (UNITY_EDITOR defined: the Grpc.Core transport is in);
#     AvatarMeta.Runtime.NoGrpc.dll: the same files as a player on a platform without Grpc.Core
#     (Android, iOS, WebGL: no define), WITHOUT a Grpc.Core reference;
#  3. AvatarMeta.Editor.dll and AvatarMeta.Tests.dll against the runtime and the stubs;
#  4. ParityRunner.exe: the Unity-free core (Policy/, World/, Channels/, Contract/) plus
#     tools/csharp/ParityRunner.cs, WITHOUT any stub: proves the core has no UnityEngine dependency;
#  5. ClientRunner.exe: the core plus the network-free adaptation client (Serving/AdaptationWire.cs,
#     Serving/AdaptationClient.cs) and the Editor's Unity-free helpers (Editor/TrainerProcess.cs,
#     Editor/PolicyExport.cs) plus tools/csharp/ClientRunner.cs, WITHOUT any stub (no Unity, no
#     Grpc.Core, no Google.Protobuf), so tests can run them under mono;
#  6. StubCheck.exe: compares a stub with the real assembly (run by hand, see StubCheck.cs).
# Usage: tools/csharp/build.sh [OUT_DIR]   (default: build/csharp). Warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-build/csharp}
PKG=unity_project/Packages/com.avatarmeta.agents
STUBS=tools/csharp/stubs
if ! command -v mcs >/dev/null 2>&1; then
  echo "build.sh: mcs not found; install Debian mono-mcs (tools/setup_venv.sh does it as root)" >&2
  exit 3
fi
mkdir -p "$OUT"
MCS=(mcs -nologo -langversion:Latest -warnaserror+ -debug-)

"${MCS[@]}" -target:library -out:"$OUT/UnityEngine.dll" "$STUBS/UnityEngine.cs"
"${MCS[@]}" -target:library -r:"$OUT/UnityEngine.dll" -out:"$OUT/Unity.ML-Agents.dll" "$STUBS/UnityMLAgents.cs"
"${MCS[@]}" -target:library -out:"$OUT/nunit.framework.dll" "$STUBS/NUnit.cs"
"${MCS[@]}" -target:library -r:"$OUT/UnityEngine.dll" -out:"$OUT/UnityEditor.dll" "$STUBS/UnityEditor.cs"
"${MCS[@]}" -target:library -out:"$OUT/Google.Protobuf_Packed.dll" "$STUBS/GoogleProtobuf.cs"
"${MCS[@]}" -target:library -out:"$OUT/System.Interactive.Async.dll" "$STUBS/SystemInteractiveAsync.cs"
# mono's mscorlib (like .NET Standard 2.1) has its own IAsyncEnumerator<T>: alias the Ix one here.
"${MCS[@]}" -target:library -r:InteractiveAsync="$OUT/System.Interactive.Async.dll" -out:"$OUT/Grpc.Core.dll" "$STUBS/GrpcCore.cs"

# Every runtime script, Proto/ included (the asmdef's precompiledReferences name the same three DLLs).
mapfile -t RUNTIME < <(find "$PKG/Runtime" -name '*.cs' | sort)
"${MCS[@]}" -target:library -define:UNITY_EDITOR -r:"$OUT/UnityEngine.dll" -r:"$OUT/Unity.ML-Agents.dll" \
  -r:"$OUT/Google.Protobuf_Packed.dll" -r:"$OUT/Grpc.Core.dll" -r:"$OUT/System.Interactive.Async.dll" \
  -out:"$OUT/AvatarMeta.Runtime.dll" "${RUNTIME[@]}"
"${MCS[@]}" -target:library -r:"$OUT/UnityEngine.dll" -r:"$OUT/Unity.ML-Agents.dll" \
  -r:"$OUT/Google.Protobuf_Packed.dll" -out:"$OUT/AvatarMeta.Runtime.NoGrpc.dll" "${RUNTIME[@]}"

mapfile -t EDITOR < <(find "$PKG/Editor" -name '*.cs' 2>/dev/null | sort)
if [ "${#EDITOR[@]}" -gt 0 ]; then
  "${MCS[@]}" -target:library -r:"$OUT/UnityEngine.dll" -r:"$OUT/UnityEditor.dll" -r:"$OUT/Unity.ML-Agents.dll" \
    -r:"$OUT/AvatarMeta.Runtime.dll" -out:"$OUT/AvatarMeta.Editor.dll" "${EDITOR[@]}"
fi

mapfile -t TESTS < <(find "$PKG/Tests" -name '*.cs' 2>/dev/null | sort)
if [ "${#TESTS[@]}" -gt 0 ]; then
  "${MCS[@]}" -target:library -r:"$OUT/UnityEngine.dll" -r:"$OUT/nunit.framework.dll" \
    -r:"$OUT/AvatarMeta.Runtime.dll" -out:"$OUT/AvatarMeta.Tests.dll" "${TESTS[@]}"
fi

mapfile -t CORE < <(find "$PKG/Runtime/Policy" "$PKG/Runtime/World" "$PKG/Runtime/Channels" "$PKG/Runtime/Contract" -name '*.cs' | sort)
"${MCS[@]}" -target:exe -out:"$OUT/ParityRunner.exe" "${CORE[@]}" tools/csharp/ParityRunner.cs
"${MCS[@]}" -target:exe -out:"$OUT/ClientRunner.exe" "${CORE[@]}" \
  "$PKG/Runtime/Serving/AdaptationWire.cs" "$PKG/Runtime/Serving/AdaptationClient.cs" \
  "$PKG/Editor/TrainerProcess.cs" "$PKG/Editor/PolicyExport.cs" tools/csharp/ClientRunner.cs
"${MCS[@]}" -target:exe -out:"$OUT/StubCheck.exe" tools/csharp/StubCheck.cs
echo "build.sh: OK -> $OUT"
