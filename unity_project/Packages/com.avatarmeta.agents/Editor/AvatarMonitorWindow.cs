using System;
using System.Collections.Generic;
using System.IO;
using UnityEditor;
using UnityEngine;

namespace AvatarMeta.Editor
{
    /// <summary>
    /// Window > avatar-meta > Avatar Monitor, the designer's panel:
    /// <list type="bullet">
    /// <item>Trainer: start/stop a local <c>avatar-meta train CONFIG --run-id ID --editor</c>
    /// (paths kept in EditorPrefs; output in a log file whose tail is shown; the process is found
    /// again after the domain reload of entering play mode);</item>
    /// <item>Areas (play mode): each area's task, decisions and streamed-policy version, every
    /// avatar's control mode and return, and a scenario family and parameters to assign to it
    /// (from the generated <see cref="AvatarContract"/>);</item>
    /// <item>Adaptation clients (play mode): status of every <see cref="AvatarAdaptationClient"/>
    /// and saving the ONNX of its last adapted policy into Assets;</item>
    /// <item>Export: copy a run's <c>AvatarAgent.onnx</c>, signed weights and public key into Assets.</item>
    /// </list>
    /// </summary>
    public sealed class AvatarMonitorWindow : EditorWindow
    {
        private const string Prefix = "AvatarMeta.";
        private const string PidKey = Prefix + "Trainer.Pid";
        private const string StartKey = Prefix + "Trainer.StartUtcTicks";
        private const string LogKey = Prefix + "Trainer.Log";
        private static readonly TimeSpan StopGrace = TimeSpan.FromSeconds(10);

        private Vector2 _scroll;
        private bool _showTrainer = true, _showAreas = true, _showClients = true, _showExport = true;
        private TrainerProcess _trainer;
        private string _trainerMessage = "";
        private string _logTail = "";
        private DateTime _lastLogRead;
        private string _exportMessage = "";
        private readonly Dictionary<int, TaskDraft> _drafts = new Dictionary<int, TaskDraft>();

        private sealed class TaskDraft
        {
            public int Family;
            public float[] Params = new float[3];
            public float[] Body = (float[])AvatarContract.DefaultBody.Clone();
        }

        /// <summary>Opens the window.</summary>
        [MenuItem("Window/avatar-meta/Avatar Monitor")]
        public static void Open() => GetWindow<AvatarMonitorWindow>("Avatar Monitor");

        private static string ProjectRoot => Directory.GetParent(Application.dataPath).FullName;

        private static string DefaultRepositoryRoot => Path.GetFullPath(Path.Combine(ProjectRoot, ".."));

        private static string DefaultExecutable => TrainerProcess.IsWindows
            ? Path.Combine(DefaultRepositoryRoot, Path.Combine(".venv", Path.Combine("Scripts", "avatar-meta.exe")))
            : Path.Combine(DefaultRepositoryRoot, Path.Combine(".venv", Path.Combine("bin", "avatar-meta")));

        private static string Pref(string key, string fallback) => EditorPrefs.GetString(Prefix + key, fallback);

        private static void SetPref(string key, string value)
        {
            value = value ?? "";
            if (EditorPrefs.GetString(Prefix + key, null) != value) EditorPrefs.SetString(Prefix + key, value);
        }

        private static bool BoolPref(string label, string key)
        {
            bool old = EditorPrefs.GetBool(Prefix + key, false);
            bool value = EditorGUILayout.Toggle(label, old);
            if (value != old) EditorPrefs.SetBool(Prefix + key, value);
            return value;
        }

        private void OnEnable()
        {
            // After a domain reload (entering play mode) find the trainer started earlier.
            int pid = SessionState.GetInt(PidKey, 0);
            if (pid > 0 && _trainer == null)
            {
                long ticks;
                if (long.TryParse(SessionState.GetString(StartKey, "0"), out ticks))
                    _trainer = TrainerProcess.Attach(pid, new DateTime(ticks, DateTimeKind.Utc), SessionState.GetString(LogKey, ""));
                if (_trainer == null) ForgetTrainer();
            }
        }

        private void OnInspectorUpdate()
        {
            if (_trainer != null && _trainer.StopRequested && _trainer.PollStop(StopGrace))
            {
                _trainerMessage = "trainer stopped";
                ForgetTrainer();
            }
            if (EditorApplication.isPlaying || _trainer != null) Repaint();
        }

        private void OnGUI()
        {
            _scroll = EditorGUILayout.BeginScrollView(_scroll);
            _showTrainer = EditorGUILayout.Foldout(_showTrainer, "Trainer", true);
            if (_showTrainer) TrainerGUI();
            EditorGUILayout.Space();
            _showAreas = EditorGUILayout.Foldout(_showAreas, "Areas, tasks and policy versions", true);
            if (_showAreas) AreasGUI();
            EditorGUILayout.Space();
            _showClients = EditorGUILayout.Foldout(_showClients, "Adaptation service clients", true);
            if (_showClients) ClientsGUI();
            EditorGUILayout.Space();
            _showExport = EditorGUILayout.Foldout(_showExport, "Export a run into Assets", true);
            if (_showExport) ExportGUI();
            EditorGUILayout.EndScrollView();
        }

        // ------------------------------------------------------------------------ trainer

        private void TrainerGUI()
        {
            string executable = EditorGUILayout.TextField("avatar-meta executable", Pref("Executable", DefaultExecutable));
            EditorGUILayout.BeginHorizontal();
            string workingDirectory = EditorGUILayout.TextField("Working directory", Pref("WorkingDirectory", DefaultRepositoryRoot));
            if (GUILayout.Button("...", GUILayout.Width(28)))
            {
                string picked = EditorUtility.OpenFolderPanel("Repository root (run folders go to results/)", workingDirectory, "");
                if (!string.IsNullOrEmpty(picked)) workingDirectory = picked;
            }
            EditorGUILayout.EndHorizontal();
            string config = EditorGUILayout.TextField("Config (YAML)", Pref("Config", "config/default.yaml"));
            string runId = EditorGUILayout.TextField("Run id", Pref("RunId", "editor"));
            bool resume = BoolPref("--resume", "Resume");
            bool force = BoolPref("--force", "Force");
            SetPref("Executable", executable);
            SetPref("WorkingDirectory", workingDirectory);
            SetPref("Config", config);
            SetPref("RunId", runId);

            bool running = _trainer != null && !_trainer.HasExited;
            if (_trainer != null && !running)
            {
                int? code = _trainer.ExitCode;
                _trainerMessage = "trainer exited" + (code.HasValue ? " with code " + code.Value : "");
                ForgetTrainer();
            }
            EditorGUILayout.LabelField("Status", running ? "running, pid " + _trainer.Id + (_trainer.StopRequested ? " (stopping)" : "") + "; press Play to connect (port 5004)" : "not running");
            if (_trainerMessage.Length > 0) EditorGUILayout.HelpBox(_trainerMessage, MessageType.None);

            EditorGUILayout.BeginHorizontal();
            EditorGUI.BeginDisabledGroup(running);
            if (GUILayout.Button("Start trainer")) StartTrainer(executable, workingDirectory, config, runId, resume, force);
            EditorGUI.EndDisabledGroup();
            EditorGUI.BeginDisabledGroup(!running);
            if (GUILayout.Button("Stop (Ctrl+C)")) { _trainer.RequestStop(); _trainerMessage = "stop requested; killed after " + StopGrace.TotalSeconds + " s if still running"; }
            if (GUILayout.Button("Kill")) { _trainer.Kill(); }
            EditorGUI.EndDisabledGroup();
            string logPath = _trainer != null ? _trainer.LogPath : SessionState.GetString(LogKey, LogPathFor(runId));
            if (GUILayout.Button("Show log") && File.Exists(logPath)) EditorUtility.RevealInFinder(logPath);
            EditorGUILayout.EndHorizontal();

            if ((DateTime.UtcNow - _lastLogRead).TotalSeconds >= 1.0)
            {
                _lastLogRead = DateTime.UtcNow;
                try { _logTail = TrainerProcess.ReadTail(logPath, 4096); }
                catch (IOException err) { _logTail = "(log unreadable: " + err.Message + ")"; }
            }
            if (_logTail.Length > 0) EditorGUILayout.TextArea(_logTail, GUILayout.MinHeight(120));
        }

        private static string LogPathFor(string runId) =>
            Path.Combine(Path.Combine(Path.Combine(ProjectRoot, "Library"), "AvatarMeta"), "trainer-" + (string.IsNullOrEmpty(runId) ? "run" : runId) + ".log");

        private void StartTrainer(string executable, string workingDirectory, string config, string runId, bool resume, bool force)
        {
            var launch = new TrainerLaunch
            {
                Executable = executable,
                WorkingDirectory = workingDirectory,
                Config = config,
                RunId = runId,
                Resume = resume,
                Force = force,
                LogPath = LogPathFor(runId),
            };
            try
            {
                if (!File.Exists(executable)) throw new ArgumentException("executable not found: " + executable + " (run `make setup` in the repository, or point this at your venv's avatar-meta)");
                if (!Directory.Exists(workingDirectory)) throw new ArgumentException("working directory not found: " + workingDirectory);
                _trainer = TrainerProcess.Start(launch);
            }
            catch (Exception err) when (err is ArgumentException || err is InvalidOperationException || err is IOException || err is System.ComponentModel.Win32Exception)
            {
                _trainerMessage = "not started: " + err.Message;
                return;
            }
            SessionState.SetInt(PidKey, _trainer.Id);
            SessionState.SetString(StartKey, _trainer.StartTimeUtc.Ticks.ToString());
            SessionState.SetString(LogKey, _trainer.LogPath);
            _trainerMessage = "started pid " + _trainer.Id + ": avatar-meta " + string.Join(" ", TrainerProcess.Arguments(launch).ToArray());
        }

        private void ForgetTrainer()
        {
            if (_trainer != null) _trainer.Dispose();
            _trainer = null;
            SessionState.EraseInt(PidKey);
            SessionState.EraseString(StartKey);
        }

        // -------------------------------------------------------------------------- areas

        private void AreasGUI()
        {
            var environment = AvatarEnvironment.Active;
            if (!EditorApplication.isPlaying || environment == null)
            {
                EditorGUILayout.HelpBox("Enter play mode with an AvatarEnvironment in the scene to see areas, assign tasks and see policy versions.", MessageType.Info);
                return;
            }
            EditorGUILayout.LabelField("Trusted key", environment.TrustedKey != null ? environment.TrustedKey.KeyId ?? "(raw key)" : "none: every streamed policy is refused");
            var areas = environment.Areas;
            for (int a = 0; a < areas.Count; a++)
            {
                var area = areas[a];
                EditorGUILayout.Space();
                EditorGUILayout.LabelField("Area " + area.AreaIndex, area.CurrentTask != null ? area.CurrentTask.ToString() : "(no episode yet)", EditorStyles.boldLabel);
                EditorGUILayout.LabelField("Decisions", area.StepsTaken.ToString());
                EditorGUILayout.LabelField("Policy version", area.Policy.ActiveVersion == 0 ? "none" : area.Policy.ActiveVersion.ToString());
                var avatars = area.Avatars;
                for (int i = 0; i < avatars.Count; i++)
                {
                    var avatar = avatars[i];
                    string mode = avatar.UsesStreamedPolicy ? "adapted v" + avatar.RunningPolicyVersion : avatar.ControlMode.ToString();
                    EditorGUILayout.LabelField("  " + avatar.name, mode + ", return " + avatar.EpisodeReturn.ToString("F2"));
                }
                TaskGUI(area, areas);
            }
        }

        private void TaskGUI(AvatarArea area, IReadOnlyList<AvatarArea> areas)
        {
            TaskDraft draft;
            if (!_drafts.TryGetValue(area.AreaIndex, out draft))
            {
                draft = new TaskDraft();
                var current = area.CurrentTask;
                if (current != null)
                {
                    draft.Family = (int)current.Family;
                    for (int i = 0; i < 3; i++) draft.Params[i] = (float)current.Params[i];
                    draft.Body = new[] { (float)current.TopSpeed, (float)current.TurnRate, (float)current.ActuationNoise };
                }
                else ResetParams(draft);
                _drafts[area.AreaIndex] = draft;
            }
            int family = EditorGUILayout.Popup("  Scenario family", draft.Family, AvatarContract.FamilyNames);
            if (family != draft.Family) { draft.Family = family; ResetParams(draft); }
            var specs = AvatarContract.FamilyParams[draft.Family];
            for (int i = 0; i < specs.Length; i++) draft.Params[i] = ParamField(specs[i], draft.Params[i]);
            for (int i = 0; i < AvatarContract.BodyParams.Length; i++) draft.Body[i] = ParamField(AvatarContract.BodyParams[i], draft.Body[i]);
            EditorGUILayout.BeginHorizontal();
            if (GUILayout.Button("Assign from next episode")) Assign(new[] { area }, draft);
            if (GUILayout.Button("Assign to every area")) Assign(areas, draft);
            if (GUILayout.Button("Random tasks")) area.AssignTask(null);
            EditorGUILayout.EndHorizontal();
        }

        private static float ParamField(ParamSpec spec, float value)
        {
            if (spec.Integer) return EditorGUILayout.IntSlider("    " + spec.Name, (int)Math.Round(value), (int)spec.Low, (int)spec.High);
            return EditorGUILayout.Slider("    " + spec.Name, value, spec.Low, spec.High);
        }

        private static void ResetParams(TaskDraft draft)
        {
            var defaults = AvatarTask.DefaultParams((ScenarioFamily)draft.Family);
            draft.Params = new float[3];
            Array.Copy(defaults, draft.Params, defaults.Length);
        }

        private static void Assign(IReadOnlyList<AvatarArea> targets, TaskDraft draft)
        {
            var specs = AvatarContract.FamilyParams[draft.Family];
            var parameters = new float[specs.Length];
            Array.Copy(draft.Params, parameters, specs.Length);
            // Validated and clipped by AvatarTask, exactly as a TaskChannel record is.
            var task = new AvatarTask((ScenarioFamily)draft.Family, parameters, (float[])draft.Body.Clone());
            for (int i = 0; i < targets.Count; i++) targets[i].AssignTask(task);
            Debug.Log("avatar-meta: " + task + " assigned to " + targets.Count + " area(s) from their next episode (a connected trainer's TaskChannel assignments replace it)");
        }

        // ------------------------------------------------------------------------ clients

        private void ClientsGUI()
        {
            var clients = AvatarAdaptationClient.Enabled;
            if (!EditorApplication.isPlaying || clients.Count == 0)
            {
                EditorGUILayout.HelpBox("In play mode, every enabled Avatar Adaptation Client is listed here with its subscription state and last adapted policy.", MessageType.Info);
                return;
            }
            for (int i = 0; i < clients.Count; i++)
            {
                var client = clients[i];
                EditorGUILayout.LabelField(client.name, client.Status);
                var result = client.LastAdaptResult;
                if (result == null) continue;
                EditorGUILayout.LabelField("  last Adapt", "v" + result.Network.Version + ", task '" + result.Network.TaskId + "', " + result.AdaptMs.ToString("F1") + " ms" + (result.Onnx.Length > 0 ? ", ONNX " + result.Onnx.Length + " bytes" : ", no ONNX (want_onnx off)"));
                EditorGUI.BeginDisabledGroup(result.Onnx.Length == 0);
                if (GUILayout.Button("Save adapted ONNX and weights into Assets/" + ExportFolder()))
                {
                    try
                    {
                        string stem = AvatarContract.BehaviorName + ".v" + result.Network.Version;
                        var written = new List<string>
                        {
                            PolicyExport.WriteAsset(ProjectRoot, ExportFolder(), stem + ".onnx", result.Onnx),
                            PolicyExport.WriteAsset(ProjectRoot, ExportFolder(), stem + ".weights.bytes", result.Envelope),
                        };
                        Import(written);
                        _exportMessage = "saved " + string.Join(", ", written.ToArray());
                    }
                    catch (Exception err) when (err is ArgumentException || err is IOException || err is UnauthorizedAccessException)
                    {
                        _exportMessage = "not saved: " + err.Message;
                    }
                }
                EditorGUI.EndDisabledGroup();
            }
        }

        // ------------------------------------------------------------------------- export

        private static string ExportFolder() => Pref("ExportFolder", "AvatarMeta/Policies");

        private void ExportGUI()
        {
            string workingDirectory = Pref("WorkingDirectory", DefaultRepositoryRoot);
            string runId = Pref("RunId", "editor");
            string runFolder = EditorGUILayout.TextField("Run folder", Pref("RunFolder", Path.Combine(Path.Combine(workingDirectory, "results"), runId)));
            string folder = EditorGUILayout.TextField("Into Assets/", ExportFolder());
            SetPref("RunFolder", runFolder);
            SetPref("ExportFolder", folder);
            EditorGUILayout.BeginHorizontal();
            if (GUILayout.Button("Use run id " + runId)) SetPref("RunFolder", Path.Combine(Path.Combine(workingDirectory, "results"), runId));
            if (GUILayout.Button("Copy ONNX, weights and public key into Assets"))
            {
                try
                {
                    var written = PolicyExport.Execute(ProjectRoot, PolicyExport.Plan(runFolder, ProjectRoot, folder));
                    Import(written);
                    _exportMessage = "copied " + string.Join(", ", written.ToArray()) + ". Drag the .onnx onto Behavior Parameters > Model, the .weights.bytes onto Initial Policy and public.pem.txt onto Policy Public Key.";
                }
                catch (Exception err) when (err is ArgumentException || err is IOException || err is UnauthorizedAccessException)
                {
                    _exportMessage = "not copied: " + err.Message;
                }
            }
            EditorGUILayout.EndHorizontal();
            if (_exportMessage.Length > 0) EditorGUILayout.HelpBox(_exportMessage, MessageType.None);
        }

        private static void Import(IList<string> assetPaths)
        {
            for (int i = 0; i < assetPaths.Count; i++) AssetDatabase.ImportAsset(assetPaths[i]);
            AssetDatabase.Refresh();
        }
    }
}
