// Compile-only stub of the NUnit 3 API surface used by the package's EditMode tests
// (Unity ships NUnit through com.unity.test-framework). Declarations only, no behaviour.
using System;

namespace NUnit.Framework
{
    [AttributeUsage(AttributeTargets.Method)]
    public sealed class TestAttribute : Attribute { }

    [AttributeUsage(AttributeTargets.Class)]
    public sealed class TestFixtureAttribute : Attribute { }

    [AttributeUsage(AttributeTargets.Method)]
    public sealed class OneTimeSetUpAttribute : Attribute { }

    public delegate void TestDelegate();

    public static class Assert
    {
        public static void AreEqual(object expected, object actual) { }
        public static void AreEqual(double expected, double actual, double delta) { }
        public static void AreEqual(double expected, double actual, double delta, string message) { }
        public static void IsTrue(bool condition) { }
        public static void IsTrue(bool condition, string message) { }
        public static void IsFalse(bool condition) { }
        public static TActual Throws<TActual>(TestDelegate code) where TActual : Exception { return null; }
    }
}
