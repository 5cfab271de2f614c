// Compile-only stub of the UnityEngine API surface used by com.avatarmeta.agents.
// Declarations only (same names and signatures as UnityEngine 6000.0), no behaviour.
// Add a member here only when the package starts using it, with the real signature.
using System;

namespace UnityEngine
{
    public class Object
    {
        public string name { get { return null; } set { } }
        public static implicit operator bool(Object exists) { return exists != null; }
    }

    public class Component : Object
    {
        public Transform transform { get { return null; } }
        public GameObject gameObject { get { return null; } }
        public T GetComponent<T>() { return default(T); }
        public T GetComponentInParent<T>() { return default(T); }
        public T[] GetComponentsInChildren<T>(bool includeInactive) { return null; }
    }

    public class Behaviour : Component
    {
        public bool enabled { get { return false; } set { } }
    }

    public class MonoBehaviour : Behaviour { }

    public sealed class GameObject : Object { }

    public class ScriptableObject : Object { }

    public class GUIStyle { }

    public sealed class GUILayoutOption { }

    public class Transform : Component
    {
        public Vector3 position { get { return default(Vector3); } set { } }
        public Vector3 localPosition { get { return default(Vector3); } set { } }
        public Quaternion rotation { get { return default(Quaternion); } set { } }
        public Quaternion localRotation { get { return default(Quaternion); } set { } }
    }

    public class TextAsset : Object
    {
        public string text { get { return null; } }
        public byte[] bytes { get { return null; } }
    }

    public struct Rect
    {
        public float x, y, width, height;
    }

    public class GUILayout
    {
        public static bool Button(string text, params GUILayoutOption[] options) { return false; }
        public static GUILayoutOption Width(float width) { return null; }
        public static GUILayoutOption MinHeight(float minHeight) { return null; }
    }

    public class Application
    {
        public static string dataPath { get { return null; } }
    }

    public struct Vector2
    {
        public float x, y;
        public Vector2(float x, float y) { this.x = x; this.y = y; }
    }

    public struct Vector3
    {
        public float x, y, z;
        public Vector3(float x, float y, float z) { this.x = x; this.y = y; this.z = z; }
    }

    public struct Quaternion
    {
        public float x, y, z, w;
        public static Quaternion Euler(float x, float y, float z) { return default(Quaternion); }
    }

    public struct Mathf
    {
        public const float Rad2Deg = 57.29578f;
        public const float Deg2Rad = 0.01745329f;
    }

    public static class Time
    {
        public static float fixedDeltaTime { get { return 0f; } set { } }
    }

    public static class Debug
    {
        public static void Log(object message) { }
        public static void Log(object message, Object context) { }
        public static void LogWarning(object message) { }
        public static void LogWarning(object message, Object context) { }
        public static void LogError(object message) { }
        public static void LogError(object message, Object context) { }
    }

    public enum KeyCode
    {
        None = 0,
        Alpha1 = 49, Alpha2 = 50, Alpha3 = 51,
        A = 97, D = 100, S = 115, W = 119,
        UpArrow = 273, DownArrow = 274, RightArrow = 275, LeftArrow = 276,
    }

    public static class Input
    {
        public static bool GetKey(KeyCode key) { return false; }
    }

    [AttributeUsage(AttributeTargets.Field)]
    public sealed class SerializeField : Attribute { }

    [AttributeUsage(AttributeTargets.Field)]
    public class PropertyAttribute : Attribute { }

    public sealed class TooltipAttribute : PropertyAttribute
    {
        public TooltipAttribute(string tooltip) { }
    }

    public sealed class HeaderAttribute : PropertyAttribute
    {
        public HeaderAttribute(string header) { }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DisallowMultipleComponent : Attribute { }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class AddComponentMenu : Attribute
    {
        public AddComponentMenu(string menuName) { }
    }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class DefaultExecutionOrder : Attribute
    {
        public DefaultExecutionOrder(int order) { }
    }
}
