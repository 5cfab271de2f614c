// Checks a compile-only stub assembly against the real assembly it stands in for: every public
// type, constructor, method, property and field the stub declares must exist in the real one
// with the same name, kind, static-ness, parameter types, return type and generic arity.
// Not run in CI (the real assemblies are not redistributable here); run it by hand when a stub
// changes, e.g. with the DLLs from com.unity.ml-agents 3.0.0's Plugins folder:
//   mono StubCheck.exe build/csharp/Grpc.Core.dll /path/to/Plugins/ProtoBuffer/Grpc.Core.dll
// Prints one line per mismatch and "STUBCHECK OK n members" or exits 1.
using System;
using System.Collections.Generic;
using System.Linq;
using System.Reflection;

internal static class StubCheck
{
    private const BindingFlags All = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static int Main(string[] args)
    {
        if (args.Length != 2) { Console.Error.WriteLine("usage: StubCheck STUB.dll REAL.dll"); return 2; }
        var stub = Assembly.LoadFile(System.IO.Path.GetFullPath(args[0]));
        var real = Assembly.LoadFile(System.IO.Path.GetFullPath(args[1]));
        int checkedMembers = 0, errors = 0;
        foreach (var type in stub.GetExportedTypes())
        {
            var other = real.GetType(type.FullName);
            if (other == null || !(other.IsPublic || other.IsNestedPublic)) { Console.WriteLine("MISSING TYPE " + type.FullName); errors++; continue; }
            if (Kind(type) != Kind(other)) { Console.WriteLine("KIND " + type.FullName + ": stub " + Kind(type) + ", real " + Kind(other)); errors++; }
            var realMembers = new HashSet<string>(other.GetMembers(All).Select(Signature));
            foreach (var member in type.GetMembers(All))
            {
                if (member is Type) continue; // nested types are exported types themselves
                var method = member as MethodInfo;
                if (method != null && method.IsSpecialName && (method.Name.StartsWith("get_") || method.Name.StartsWith("set_"))) continue;
                string sig = Signature(member);
                checkedMembers++;
                if (!realMembers.Contains(sig)) { Console.WriteLine("MISSING " + type.FullName + " :: " + sig); errors++; }
            }
        }
        Console.WriteLine(errors == 0 ? "STUBCHECK OK " + checkedMembers + " members" : "STUBCHECK FAIL " + errors + " of " + checkedMembers);
        return errors == 0 ? 0 : 1;
    }

    private static string Kind(Type t) => t.IsInterface ? "interface" : t.IsEnum ? "enum" : t.IsValueType ? "struct" : t.IsSubclassOf(typeof(Delegate)) ? "delegate" : "class";

    private static string TypeName(Type t)
    {
        if (t.IsByRef) return "ref " + TypeName(t.GetElementType());
        if (t.IsGenericParameter) return (t.DeclaringMethod != null ? "!!" : "!") + t.GenericParameterPosition;
        if (t.IsArray) return TypeName(t.GetElementType()) + "[]";
        if (t.IsGenericType) return t.GetGenericTypeDefinition().FullName + "<" + string.Join(",", t.GetGenericArguments().Select(TypeName)) + ">";
        return t.FullName ?? t.Name;
    }

    private static string Params(ParameterInfo[] ps) => "(" + string.Join(",", ps.Select(p => TypeName(p.ParameterType) + (p.IsOut ? " out" : ""))) + ")";

    private static string Signature(MemberInfo m)
    {
        var c = m as ConstructorInfo;
        if (c != null) return (c.IsStatic ? "static " : "") + ".ctor" + Params(c.GetParameters());
        var mi = m as MethodInfo;
        if (mi != null) return (mi.IsStatic ? "static " : "") + TypeName(mi.ReturnType) + " " + mi.Name + (mi.IsGenericMethod ? "`" + mi.GetGenericArguments().Length : "") + Params(mi.GetParameters());
        var p = m as PropertyInfo;
        if (p != null)
        {
            var accessor = p.GetGetMethod() ?? p.GetSetMethod();
            return (accessor != null && accessor.IsStatic ? "static " : "") + "property " + TypeName(p.PropertyType) + " " + p.Name + Params(p.GetIndexParameters());
        }
        var f = m as FieldInfo;
        if (f != null) return (f.IsStatic ? "static " : "") + (f.IsLiteral ? "const " : "") + "field " + TypeName(f.FieldType) + " " + f.Name;
        var e = m as EventInfo;
        if (e != null) return "event " + TypeName(e.EventHandlerType) + " " + e.Name;
        return m.MemberType + " " + m.Name;
    }
}
