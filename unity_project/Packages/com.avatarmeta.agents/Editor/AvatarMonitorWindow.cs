using UnityEditor;
using UnityEngine;

namespace AvatarMeta.Editor
{
    /// <summary>
    /// Window > avatar-meta > Avatar Monitor: in play mode, lists every area with its task,
    /// decision count and streamed-policy version, and every avatar's control mode and return.
    /// </summary>
    public sealed class AvatarMonitorWindow : EditorWindow
    {
        private Vector2 _scroll;

        /// <summary>Opens the window.</summary>
        [MenuItem("Window/avatar-meta/Avatar Monitor")]
        public static void Open() => GetWindow<AvatarMonitorWindow>("Avatar Monitor");

        private void OnInspectorUpdate()
        {
            if (EditorApplication.isPlaying) Repaint();
        }

        private void OnGUI()
        {
            var environment = AvatarEnvironment.Active;
            if (!EditorApplication.isPlaying || environment == null)
            {
                EditorGUILayout.HelpBox("Enter play mode with an AvatarEnvironment in the scene to see areas and policy versions.", MessageType.Info);
                return;
            }
            EditorGUILayout.LabelField("Trusted key", environment.TrustedKey != null ? environment.TrustedKey.KeyId ?? "(raw key)" : "none: every streamed policy is refused");
            _scroll = EditorGUILayout.BeginScrollView(_scroll);
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
            }
            EditorGUILayout.EndScrollView();
        }
    }
}
