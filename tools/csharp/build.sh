#!/usr/bin/env bash
# Compiles the Unity package's C# with Debian's mono `mcs` (no Unity Editor needed):
#  1. stub assemblies (tools/csharp/stubs/: UnityEngine, UnityEditor, Unity.ML-Agents, NUnit) - declarations only;
#  2. AvatarMeta.Runtime.dll: every Runtime/**/*.cs except the generated Proto/ messages
#     (they need Google.Protobuf, which Unity gets from com.unity.ml-agents), against the stubs;
#  3. AvatarMeta.Editor.dll and AvatarMeta.Tests.dll against the runtime and the stubs;
#  4. ParityRunner.exe: the Unity-free core (Policy/, World/, Channels/, Contract/) plus
#     tools/csharp/ParityRunner.cs, WITHOUT any stub: proves the core has no UnityEngine dependency.
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

mapfile -t RUNTIME < <(find "$PKG/Runtime" -name '*.cs' -not -path '*/Proto/*' | sort)
"${MCS[@]}" -target:library -r:"$OUT/UnityEngine.dll" -r:"$OUT/Unity.ML-Agents.dll" \
  -out:"$OUT/AvatarMeta.Runtime.dll" "${RUNTIME[@]}"

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
echo "build.sh: OK -> $OUT"
