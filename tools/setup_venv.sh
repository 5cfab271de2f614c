#!/usr/bin/env bash
# Creates .venv and installs avatar-meta with the ML-Agents Release 22 Python packages.
# mlagents/mlagents-envs 1.1.0 declare Python <=3.10.12 and pin grpcio<=1.48.2 (no wheels for
# 3.11+), so they go in with --no-deps --ignore-requires-python and their real needs are
# installed from requirements/ under requirements/constraints.txt. See docs/install.md.
set -euo pipefail
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
cd "$(dirname "$0")/.."

"$PYTHON" tools/check_python.py

# protoc + the gRPC Python plugin regenerate protos/ stubs (tools/gen_protos.sh, checked by
# tests/test_protos.py). Debian's 3.21 generator is the one whose output runs on protobuf 3.20.3.
if ! command -v protoc >/dev/null 2>&1 || [ ! -x /usr/bin/grpc_python_plugin ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing protobuf-compiler protobuf-compiler-grpc (apt-get)"
    if ! { apt-get install -y -qq --no-install-recommends protobuf-compiler protobuf-compiler-grpc \
           >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 &&
           apt-get install -y -qq --no-install-recommends protobuf-compiler protobuf-compiler-grpc \
           >/dev/null 2>&1; }; }; then
      echo "[setup] WARNING: could not apt-get install protobuf-compiler protobuf-compiler-grpc;" \
           "tests/test_protos.py will fail until protoc and grpc_python_plugin are installed" >&2
    fi
  else
    echo "[setup] WARNING: protoc/grpc_python_plugin missing and cannot apt-get install them" \
         "(need root and apt-get): install protobuf-compiler and protobuf-compiler-grpc" \
         "(Debian/Ubuntu) for tools/gen_protos.sh and tests/test_protos.py" >&2
  fi
fi

# mono (Debian mono-mcs + mono-runtime) compiles the Unity package's C# against stub assemblies
# and runs the pure-C# policy evaluator on the shared test vectors (tools/csharp/build.sh,
# tests/test_unity_csharp.py). About 16 s of apt-get; the Unity Editor itself is not needed.
MONO_PACKAGES=(mono-mcs mono-runtime libmono-system-core4.0-cil libmono-system4.0-cil)
if ! command -v mcs >/dev/null 2>&1 || ! command -v mono >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing ${MONO_PACKAGES[*]} (apt-get)"
    if ! { apt-get install -y -qq --no-install-recommends "${MONO_PACKAGES[@]}" >/dev/null 2>&1 ||
           { apt-get update -qq >/dev/null 2>&1 &&
             apt-get install -y -qq --no-install-recommends "${MONO_PACKAGES[@]}" >/dev/null 2>&1; }; }; then
      echo "[setup] WARNING: could not apt-get install mono; tests/test_unity_csharp.py will skip" >&2
    fi
  else
    echo "[setup] WARNING: mono (mcs) missing and cannot apt-get install it (need root and" \
         "apt-get): install ${MONO_PACKAGES[*]} for tests/test_unity_csharp.py" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade "pip>=24"
echo "[setup] installing mlagents 1.1.0 + mlagents-envs 1.1.0 (no-deps, see docs/install.md)"
"${PIP[@]}" install --no-deps --ignore-requires-python mlagents==1.1.0 mlagents-envs==1.1.0
echo "[setup] installing pinned runtime and dev dependencies"
"${PIP[@]}" install -c requirements/constraints.txt -r requirements/runtime.txt -r requirements/dev.txt
echo "[setup] installing avatar-meta (editable)"
"${PIP[@]}" install -c requirements/constraints.txt --no-deps --no-build-isolation -e .
# Fail fast if anything moved protobuf under mlagents-envs' generated messages.
"$VENV/bin/python" -c "import avatar_meta.compat as c; c.check_stack()"
echo "[setup] done: $VENV"
