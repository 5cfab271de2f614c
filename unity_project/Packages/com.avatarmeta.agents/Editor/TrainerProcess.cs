using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Text;

namespace AvatarMeta.Editor
{
    /// <summary>What to launch: <c>avatar-meta train [CONFIG] --run-id ID --editor [--resume|--force]</c>.</summary>
    public sealed class TrainerLaunch
    {
        /// <summary>The <c>avatar-meta</c> executable (e.g. <c>.venv/bin/avatar-meta</c>), or a Python interpreter (then <c>-m avatar_meta.cli</c> is used).</summary>
        public string Executable = "";
        /// <summary>Working directory (the repository root: run folders go to <c>results/</c> there).</summary>
        public string WorkingDirectory = "";
        /// <summary>YAML config, relative to the working directory or absolute; empty = built-in defaults.</summary>
        public string Config = "";
        /// <summary>Run folder name.</summary>
        public string RunId = "editor";
        /// <summary>Continue the run from its last checkpoint.</summary>
        public bool Resume;
        /// <summary>Overwrite an existing run folder.</summary>
        public bool Force;
        /// <summary>Where stdout and stderr go (the window shows its tail).</summary>
        public string LogPath = "";
    }

    /// <summary>
    /// Starts, finds again and stops the local trainer process for the Editor window. Unity-free
    /// (System.Diagnostics only), so CI runs it under mono.
    /// </summary>
    /// <remarks>
    /// The trainer's output goes to a log file, not to a pipe: entering play mode reloads the
    /// Editor's script domain, which would close a pipe reader and kill the trainer on its next
    /// write. On macOS/Linux the process is <c>/bin/sh -c 'exec ...'</c>, so the shell becomes
    /// the trainer (one PID); on Windows it is <c>cmd.exe /d /s /c</c> with the redirection and
    /// the tree is ended with <c>taskkill /T</c>. The window keeps PID and start time in
    /// SessionState to find the process again after a domain reload
    /// (<see cref="Attach"/> checks the start time so a recycled PID is never mistaken for it).
    /// </remarks>
    public sealed class TrainerProcess : IDisposable
    {
        private readonly Process _process;
        private DateTime? _stopRequestedUtc;

        /// <summary>Process id.</summary>
        public int Id { get; }
        /// <summary>Start time (UTC), used to recognise the process after a domain reload.</summary>
        public DateTime StartTimeUtc { get; }
        /// <summary>The log file receiving stdout and stderr.</summary>
        public string LogPath { get; }
        /// <summary>True once a stop was requested.</summary>
        public bool StopRequested => _stopRequestedUtc.HasValue;

        private TrainerProcess(Process process, string logPath)
        {
            _process = process;
            Id = process.Id;
            StartTimeUtc = SafeStartTime(process);
            LogPath = logPath;
        }

        /// <summary>True when the Editor runs on Windows (cmd.exe launch, taskkill stop).</summary>
        public static bool IsWindows => Path.DirectorySeparatorChar == '\\';

        /// <summary>The trainer's arguments (without the executable).</summary>
        public static List<string> Arguments(TrainerLaunch launch)
        {
            Validate(launch);
            var args = new List<string>();
            if (IsPython(launch.Executable)) { args.Add("-m"); args.Add("avatar_meta.cli"); }
            args.Add("train");
            if (!string.IsNullOrEmpty(launch.Config)) args.Add(launch.Config);
            args.Add("--run-id");
            args.Add(launch.RunId);
            args.Add("--editor");
            if (launch.Resume) args.Add("--resume");
            if (launch.Force) args.Add("--force");
            return args;
        }

        /// <summary>Throws <see cref="ArgumentException"/> naming the first unusable setting.</summary>
        public static void Validate(TrainerLaunch launch)
        {
            if (launch == null) throw new ArgumentNullException(nameof(launch));
            if (string.IsNullOrEmpty(launch.Executable)) throw new ArgumentException("set the avatar-meta executable (e.g. .venv/bin/avatar-meta)");
            if (string.IsNullOrEmpty(launch.RunId)) throw new ArgumentException("set a run id");
            foreach (char c in launch.RunId)
            {
                if (!(char.IsLetterOrDigit(c) && c < 128) && c != '-' && c != '_' && c != '.')
                    throw new ArgumentException("run id may only hold letters, digits, '-', '_' and '.': '" + launch.RunId + "'");
            }
            if (launch.RunId.StartsWith(".", StringComparison.Ordinal)) throw new ArgumentException("run id must not start with '.'");
            if (launch.Resume && launch.Force) throw new ArgumentException("--resume and --force exclude each other");
            if (string.IsNullOrEmpty(launch.LogPath)) throw new ArgumentException("set a log path");
            if (IsWindows)
            {
                foreach (var value in new[] { launch.Executable, launch.Config ?? "", launch.LogPath, launch.WorkingDirectory ?? "" })
                {
                    if (value.IndexOfAny(new[] { '"', '%', '^', '&', '|', '<', '>', '!' }) >= 0)
                        throw new ArgumentException("paths must not contain \" % ^ & | < > ! on Windows (cmd.exe): " + value);
                }
            }
        }

        /// <summary>The start info (exposed for tests): a shell that redirects the trainer's output to the log and becomes (POSIX) or runs (Windows) the trainer.</summary>
        public static ProcessStartInfo StartInfo(TrainerLaunch launch)
        {
            var args = Arguments(launch);
            var info = new ProcessStartInfo
            {
                UseShellExecute = false,
                CreateNoWindow = true,
                WorkingDirectory = string.IsNullOrEmpty(launch.WorkingDirectory) ? Directory.GetCurrentDirectory() : launch.WorkingDirectory,
            };
            if (IsWindows)
            {
                var line = new StringBuilder();
                line.Append('"').Append(launch.Executable).Append('"');
                foreach (var a in args) line.Append(' ').Append('"').Append(a).Append('"');
                line.Append(" >>\"").Append(launch.LogPath).Append("\" 2>&1");
                info.FileName = "cmd.exe";
                info.Arguments = "/d /s /c \"" + line + "\"";
            }
            else
            {
                // sh -c 'log=$1; shift; exec "$@" >>"$log" 2>&1' avatar-meta-trainer LOG EXE ARGS...
                var argv = new List<string> { "-c", "log=$1; shift; exec \"$@\" >>\"$log\" 2>&1", "avatar-meta-trainer", launch.LogPath, launch.Executable };
                argv.AddRange(args);
                info.FileName = "/bin/sh";
                info.Arguments = JoinPosix(argv);
            }
            info.EnvironmentVariables["PYTHONUNBUFFERED"] = "1"; // the log shows progress as it happens
            return info;
        }

        /// <summary>Starts the trainer (creates the log's folder and marks the log with the command line).</summary>
        public static TrainerProcess Start(TrainerLaunch launch)
        {
            var info = StartInfo(launch);
            string folder = Path.GetDirectoryName(Path.GetFullPath(launch.LogPath));
            if (!string.IsNullOrEmpty(folder)) Directory.CreateDirectory(folder);
            File.AppendAllText(launch.LogPath, "=== " + DateTime.UtcNow.ToString("u") + " " + launch.Executable + " " + string.Join(" ", Arguments(launch).ToArray()) + Environment.NewLine);
            var process = Process.Start(info);
            if (process == null) throw new InvalidOperationException("could not start " + info.FileName);
            return new TrainerProcess(process, launch.LogPath);
        }

        /// <summary>
        /// The trainer started earlier in this Editor session (<paramref name="processId"/>,
        /// <paramref name="startTimeUtc"/>), or null when it has exited or the PID now belongs to
        /// another process.
        /// </summary>
        public static TrainerProcess Attach(int processId, DateTime startTimeUtc, string logPath)
        {
            Process process;
            try { process = Process.GetProcessById(processId); }
            catch (ArgumentException) { return null; }
            catch (InvalidOperationException) { return null; }
            try
            {
                if (process.HasExited) { process.Dispose(); return null; }
                if (Math.Abs((SafeStartTime(process) - startTimeUtc).TotalSeconds) > 2.0) { process.Dispose(); return null; }
            }
            catch (InvalidOperationException) { process.Dispose(); return null; }
            return new TrainerProcess(process, logPath);
        }

        /// <summary>True once the trainer ended.</summary>
        public bool HasExited
        {
            get
            {
                try { return _process.HasExited; }
                catch (InvalidOperationException) { return true; }
            }
        }

        /// <summary>Exit code, when the process ended and is our child (null otherwise).</summary>
        public int? ExitCode
        {
            get
            {
                try { return _process.HasExited ? _process.ExitCode : (int?)null; }
                catch (InvalidOperationException) { return null; }
            }
        }

        /// <summary>Asks the trainer to stop: SIGINT (like Ctrl+C) on macOS/Linux, taskkill /T on Windows. Returns at once.</summary>
        public void RequestStop()
        {
            if (HasExited) return;
            if (!_stopRequestedUtc.HasValue) _stopRequestedUtc = DateTime.UtcNow;
            if (IsWindows) RunQuietly("taskkill", "/PID " + Id + " /T /F");
            else RunQuietly("/bin/sh", JoinPosix(new[] { "-c", "kill -INT \"$0\"", Id.ToString() })); // the shell's builtin: no PATH lookup
        }

        /// <summary>Call periodically after <see cref="RequestStop"/>: kills the trainer once <paramref name="grace"/> has passed. True when it has exited.</summary>
        public bool PollStop(TimeSpan grace)
        {
            if (HasExited) return true;
            if (_stopRequestedUtc.HasValue && DateTime.UtcNow - _stopRequestedUtc.Value >= grace) Kill();
            return HasExited;
        }

        /// <summary>Ends the trainer at once (SIGKILL / taskkill /F).</summary>
        public void Kill()
        {
            if (HasExited) return;
            if (IsWindows) RunQuietly("taskkill", "/PID " + Id + " /T /F");
            try { if (!_process.HasExited) _process.Kill(); }
            catch (InvalidOperationException) { }
            catch (System.ComponentModel.Win32Exception) { }
        }

        /// <summary>Waits up to <paramref name="timeout"/> for the exit (tests and shutdown only; never from OnGUI).</summary>
        public bool WaitForExit(TimeSpan timeout)
        {
            try { return _process.WaitForExit((int)timeout.TotalMilliseconds); }
            catch (InvalidOperationException) { return true; }
        }

        /// <summary>The last <paramref name="maxBytes"/> bytes of the log (shared read: the trainer keeps writing).</summary>
        public static string ReadTail(string logPath, int maxBytes)
        {
            if (string.IsNullOrEmpty(logPath) || !File.Exists(logPath)) return "";
            using (var stream = new FileStream(logPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
            {
                long start = Math.Max(0, stream.Length - maxBytes);
                stream.Seek(start, SeekOrigin.Begin);
                var buffer = new byte[stream.Length - start];
                int read = 0;
                while (read < buffer.Length)
                {
                    int n = stream.Read(buffer, read, buffer.Length - read);
                    if (n <= 0) break;
                    read += n;
                }
                string text = Encoding.UTF8.GetString(buffer, 0, read);
                if (start > 0)
                {
                    int newline = text.IndexOf('\n');
                    if (newline >= 0) text = text.Substring(newline + 1);
                }
                return text;
            }
        }

        /// <summary>Releases the process handle (the trainer keeps running).</summary>
        public void Dispose() => _process.Dispose();

        /// <summary>Quotes arguments for mono's (glib shell-style) splitting of ProcessStartInfo.Arguments on macOS/Linux.</summary>
        public static string JoinPosix(IList<string> argv)
        {
            var sb = new StringBuilder();
            for (int i = 0; i < argv.Count; i++)
            {
                if (i > 0) sb.Append(' ');
                sb.Append('\'').Append(argv[i].Replace("'", "'\\''")).Append('\'');
            }
            return sb.ToString();
        }

        private static bool IsPython(string executable)
        {
            string name = Path.GetFileNameWithoutExtension(executable ?? "").ToLowerInvariant();
            return name == "python" || name.StartsWith("python3", StringComparison.Ordinal);
        }

        private static DateTime SafeStartTime(Process process)
        {
            try { return process.StartTime.ToUniversalTime(); }
            catch (InvalidOperationException) { return DateTime.MinValue; }
            catch (NotSupportedException) { return DateTime.MinValue; }
        }

        private static void RunQuietly(string file, string arguments)
        {
            try
            {
                using (var p = Process.Start(new ProcessStartInfo(file, arguments) { UseShellExecute = false, CreateNoWindow = true }))
                {
                    p?.WaitForExit(5000);
                }
            }
            catch (System.ComponentModel.Win32Exception) { }
            catch (InvalidOperationException) { }
        }
    }
}
