// Compile-only stub of the UnityEditor API surface used by com.avatarmeta.agents' Editor scripts.
// Declarations only (same names and signatures as UnityEditor 6000.0; the window's members were
// checked against Unity-Technologies/UnityCsReference), no behaviour.
using System;
using UnityEngine;

namespace UnityEditor
{
    public class EditorWindow : ScriptableObject
    {
        public static T GetWindow<T>(string title) where T : EditorWindow { return null; }
        public void Repaint() { }
    }

    [AttributeUsage(AttributeTargets.Method, AllowMultiple = true)]
    public sealed class MenuItem : Attribute
    {
        public MenuItem(string itemName) { }
    }

    public sealed class EditorGUI
    {
        public static void BeginDisabledGroup(bool disabled) { }
        public static void EndDisabledGroup() { }
    }

    public sealed class EditorPrefs
    {
        public static string GetString(string key, string defaultValue) { return defaultValue; }
        public static void SetString(string key, string value) { }
        public static bool GetBool(string key, bool defaultValue) { return defaultValue; }
        public static void SetBool(string key, bool value) { }
    }

    public class SessionState
    {
        public static int GetInt(string key, int defaultValue) { return defaultValue; }
        public static void SetInt(string key, int value) { }
        public static void EraseInt(string key) { }
        public static string GetString(string key, string defaultValue) { return defaultValue; }
        public static void SetString(string key, string value) { }
        public static void EraseString(string key) { }
    }

    public sealed class AssetDatabase
    {
        public static void ImportAsset(string path) { }
        public static void Refresh() { }
    }

    public class EditorUtility
    {
        public static string OpenFilePanel(string title, string directory, string extension) { return null; }
        public static string OpenFolderPanel(string title, string folder, string defaultName) { return null; }
        public static void RevealInFinder(string path) { }
        public static bool DisplayDialog(string title, string message, string ok) { return false; }
    }

    public static class EditorApplication
    {
        public static bool isPlaying { get { return false; } set { } }
    }

    public enum MessageType { None, Info, Warning, Error }

    public sealed class EditorStyles
    {
        public static GUIStyle boldLabel { get { return null; } }
    }

    public sealed class EditorGUILayout
    {
        public static void HelpBox(string message, MessageType type) { }
        public static void LabelField(string label, params GUILayoutOption[] options) { }
        public static string TextField(string label, string text, params GUILayoutOption[] options) { return text; }
        public static string TextArea(string text, params GUILayoutOption[] options) { return text; }
        public static bool Toggle(string label, bool value, params GUILayoutOption[] options) { return value; }
        public static int Popup(string label, int selectedIndex, string[] displayedOptions, params GUILayoutOption[] options) { return selectedIndex; }
        public static float Slider(string label, float value, float leftValue, float rightValue, params GUILayoutOption[] options) { return value; }
        public static int IntSlider(string label, int value, int leftValue, int rightValue, params GUILayoutOption[] options) { return value; }
        public static bool Foldout(bool foldout, string content, bool toggleOnLabelClick) { return foldout; }
        public static Rect BeginHorizontal(params GUILayoutOption[] options) { return default(Rect); }
        public static void EndHorizontal() { }
        public static void LabelField(string label, string label2, params GUILayoutOption[] options) { }
        public static void LabelField(string label, string label2, GUIStyle style, params GUILayoutOption[] options) { }
        public static void Space() { }
        public static Vector2 BeginScrollView(Vector2 scrollPosition, params GUILayoutOption[] options) { return scrollPosition; }
        public static void EndScrollView() { }
    }
}
