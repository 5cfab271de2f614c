using System;
using System.Collections.Generic;
using System.IO;

namespace AvatarMeta.Editor
{
    /// <summary>
    /// Copies a run's exported policy into the project's Assets (Unity-free: the window calls
    /// AssetDatabase.ImportAsset on the returned paths). From <c>results/&lt;run-id&gt;/</c>:
    /// <c>&lt;Behavior&gt;.onnx</c> (Sentis model, for Behavior Parameters &gt; Model),
    /// <c>&lt;Behavior&gt;.weights.bin</c> as <c>.weights.bytes</c> (a TextAsset for the
    /// environment's Initial Policy) and <c>keys/public.pem</c> as <c>public.pem.txt</c> (its Policy
    /// Public Key). The private key is never copied.
    /// </summary>
    public static class PolicyExport
    {
        /// <summary>One planned copy.</summary>
        public struct Copy
        {
            /// <summary>Absolute source path.</summary>
            public string Source;
            /// <summary>Destination relative to the project root, forward slashes ("Assets/...").</summary>
            public string AssetPath;
        }

        /// <summary>
        /// The copies for <paramref name="runFolder"/> into <c>Assets/&lt;assetFolder&gt;</c> of
        /// <paramref name="projectRoot"/>. Throws <see cref="ArgumentException"/> when the run has no
        /// ONNX or weights, or the destination leaves Assets.
        /// </summary>
        public static List<Copy> Plan(string runFolder, string projectRoot, string assetFolder, string behavior = AvatarContract.BehaviorName)
        {
            if (string.IsNullOrEmpty(runFolder) || !Directory.Exists(runFolder)) throw new ArgumentException("run folder not found: " + runFolder);
            string folder = AssetFolder(projectRoot, assetFolder);
            var copies = new List<Copy>();
            string onnx = Path.Combine(runFolder, behavior + ".onnx");
            string weights = Path.Combine(runFolder, behavior + ".weights.bin");
            string key = Path.Combine(Path.Combine(runFolder, "keys"), "public.pem");
            if (!File.Exists(onnx) && !File.Exists(weights))
                throw new ArgumentException("no " + behavior + ".onnx or " + behavior + ".weights.bin in " + runFolder + " (the trainer writes them when a run finishes; or use `avatar-meta export`)");
            if (File.Exists(onnx)) copies.Add(new Copy { Source = onnx, AssetPath = folder + "/" + behavior + ".onnx" });
            if (File.Exists(weights)) copies.Add(new Copy { Source = weights, AssetPath = folder + "/" + behavior + ".weights.bytes" });
            if (File.Exists(key)) copies.Add(new Copy { Source = key, AssetPath = folder + "/public.pem.txt" });
            return copies;
        }

        /// <summary>Performs the copies (each written to a temporary file and moved into place); returns the asset paths written.</summary>
        public static List<string> Execute(string projectRoot, IList<Copy> copies)
        {
            var written = new List<string>();
            foreach (var copy in copies)
            {
                WriteAtomically(Path.Combine(projectRoot, copy.AssetPath), File.ReadAllBytes(copy.Source));
                written.Add(copy.AssetPath);
            }
            return written;
        }

        /// <summary>Writes <paramref name="bytes"/> (e.g. the ONNX of an Adapt answer) to <c>Assets/&lt;assetFolder&gt;/&lt;fileName&gt;</c>; returns the asset path.</summary>
        public static string WriteAsset(string projectRoot, string assetFolder, string fileName, byte[] bytes)
        {
            if (bytes == null || bytes.Length == 0) throw new ArgumentException("nothing to write");
            if (string.IsNullOrEmpty(fileName) || fileName.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || fileName.StartsWith(".", StringComparison.Ordinal))
                throw new ArgumentException("bad file name '" + fileName + "'");
            string assetPath = AssetFolder(projectRoot, assetFolder) + "/" + fileName;
            WriteAtomically(Path.Combine(projectRoot, assetPath), bytes);
            return assetPath;
        }

        /// <summary>"Assets/&lt;assetFolder&gt;" with forward slashes; throws when it would leave Assets.</summary>
        public static string AssetFolder(string projectRoot, string assetFolder)
        {
            if (string.IsNullOrEmpty(projectRoot)) throw new ArgumentException("project root is empty");
            string relative = (assetFolder ?? "").Replace('\\', '/').Trim('/');
            string assets = Path.GetFullPath(Path.Combine(projectRoot, "Assets"));
            string target = Path.GetFullPath(Path.Combine(assets, relative));
            string assetsWithSlash = assets.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
            if (target != assets && !target.StartsWith(assetsWithSlash, StringComparison.Ordinal))
                throw new ArgumentException("destination must be inside Assets: " + assetFolder);
            string rest = target.Length > assets.Length ? target.Substring(assets.Length + 1).Replace('\\', '/') : "";
            return rest.Length > 0 ? "Assets/" + rest : "Assets";
        }

        private static void WriteAtomically(string path, byte[] bytes)
        {
            string folder = Path.GetDirectoryName(path);
            Directory.CreateDirectory(folder);
            string temp = Path.Combine(folder, "." + Path.GetFileName(path) + "." + Guid.NewGuid().ToString("N") + ".tmp");
            File.WriteAllBytes(temp, bytes);
            if (File.Exists(path)) File.Delete(path);
            File.Move(temp, path);
        }
    }
}
