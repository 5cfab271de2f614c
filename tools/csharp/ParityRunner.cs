// Parity runner for the pure-C# PolicyWeights evaluator (run under mono by tests/test_unity_csharp.py).
// Usage: mono ParityRunner.exe tests/vectors/policy_v1.json   (policy parity + refusals)
//        mono ParityRunner.exe --lines REQUESTS.txt             (observation / reward / codec requests)
// Prints one line per result; exit code 0 only if every check passed.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Security.Cryptography;
using System.Text;
using AvatarMeta;

internal static class ParityRunner
{
    private static int Main(string[] args)
    {
        if (args.Length < 1) { Console.Error.WriteLine("usage: ParityRunner VECTORS.json | --lines REQUESTS.txt"); return 2; }
        if (args[0] == "--lines") return LineRequests.Run(args[1]);
        var root = (Dictionary<string, object>)MiniJson.Parse(File.ReadAllText(args[0]));
        bool ok = true;
        var key = PolicyPublicKey.FromPem((string)root["public_key_pem"]);
        Console.WriteLine("KEYID " + key.KeyId + " expected " + (string)root["key_id"]);
        ok &= key.KeyId == (string)root["key_id"];

        var policy = new StreamedPolicy();
        var network = policy.Load(Convert.FromBase64String((string)root["envelope_b64"]), key);
        Console.WriteLine("VERSION " + network.Version);

        var obs = ParseMatrix(root["obs"]);
        var masks = (List<object>)root["action_mask_masked"];
        var expectedCont = ParseMatrix(root["expected_continuous"]);
        var expectedDisc = ParseMatrix(root["expected_discrete"]);
        double tolerance = root.ContainsKey("tolerance") ? Convert.ToDouble(root["tolerance"], CultureInfo.InvariantCulture) : 1e-5;

        var observation = new float[network.ObservationSize];
        var mask = new bool[network.MaskSize];
        var continuous = new float[network.ContinuousSize];
        var discrete = new int[network.BranchCount];
        double maxDiff = 0;
        for (int row = 0; row < obs.Count; row++)
        {
            for (int i = 0; i < observation.Length; i++) observation[i] = (float)obs[row][i];
            var maskRow = (List<object>)masks[row];
            for (int i = 0; i < mask.Length; i++) mask[i] = Convert.ToDouble(maskRow[i], CultureInfo.InvariantCulture) != 0;
            if (!policy.Decide(observation, mask, continuous, discrete)) { Console.WriteLine("FAIL no policy"); return 1; }
            var line = new StringBuilder("ROW " + row + " cont");
            for (int c = 0; c < continuous.Length; c++)
            {
                line.Append(' ').Append(continuous[c].ToString("R", CultureInfo.InvariantCulture));
                maxDiff = Math.Max(maxDiff, Math.Abs(continuous[c] - expectedCont[row][c]));
            }
            line.Append(" disc");
            for (int b = 0; b < discrete.Length; b++)
            {
                line.Append(' ').Append(discrete[b]);
                if (discrete[b] != (int)expectedDisc[row][b]) ok = false;
            }
            Console.WriteLine(line.ToString());
        }
        Console.WriteLine("MAXDIFF " + maxDiff.ToString("R", CultureInfo.InvariantCulture));
        ok &= maxDiff <= tolerance;

        // Allocation check: 1000 decisions on the warm policy should not allocate.
        long before = GC.GetTotalMemory(false);
        for (int n = 0; n < 1000; n++) policy.Decide(observation, mask, continuous, discrete);
        long after = GC.GetTotalMemory(false);
        Console.WriteLine("ALLOCATED_BYTES_1000 " + Math.Max(0, after - before));

        ok &= ExpectRefused("TAMPERED", () => policy.Load(Convert.FromBase64String((string)root["tampered_envelope_b64"]), key));
        using (var other = RSA.Create())
        {
            other.KeySize = 2048;
            var wrongKey = PolicyPublicKey.FromParameters(other.ExportParameters(false));
            ok &= ExpectRefused("WRONGKEY", () => policy.Load(Convert.FromBase64String((string)root["envelope_b64"]), wrongKey));
        }
        ok &= ExpectRefused("UNSIGNED", () => policy.Load(UnsignedCopy(Convert.FromBase64String((string)root["envelope_b64"])), key));
        ok &= ExpectRefused("NOKEY", () => policy.Load(Convert.FromBase64String((string)root["envelope_b64"]), null));
        Console.WriteLine("ACTIVE_VERSION_AFTER_REFUSALS " + policy.ActiveVersion);
        Console.WriteLine(ok ? "RESULT PASS" : "RESULT FAIL");
        return ok ? 0 : 1;
    }

    private static bool ExpectRefused(string label, Action load)
    {
        try
        {
            load();
            Console.WriteLine(label + " ACCEPTED");
            return false;
        }
        catch (PolicyVerificationException err)
        {
            Console.WriteLine(label + " REFUSED " + err.Message);
            return true;
        }
    }

    /// <summary>The envelope with only its payload field (field 1) kept: no signature.</summary>
    private static byte[] UnsignedCopy(byte[] envelope)
    {
        var reader = new ProtoWireReader(envelope, 0, envelope.Length);
        using (var output = new MemoryStream())
        {
            while (reader.HasMore)
            {
                int field = reader.ReadTag(out int wire);
                if (field == 1)
                {
                    reader.ReadLengthDelimited(out int off, out int len);
                    output.WriteByte(0x0A);
                    uint v = (uint)len;
                    while (v >= 0x80) { output.WriteByte((byte)(v | 0x80)); v >>= 7; }
                    output.WriteByte((byte)v);
                    output.Write(envelope, off, len);
                }
                else reader.SkipField(wire);
            }
            return output.ToArray();
        }
    }

    private static List<double[]> ParseMatrix(object value)
    {
        if (value is string text) value = MiniJson.Parse(text);
        var rows = new List<double[]>();
        foreach (var row in (List<object>)value)
        {
            var items = (List<object>)row;
            var values = new double[items.Count];
            for (int i = 0; i < items.Count; i++) values[i] = Convert.ToDouble(items[i], CultureInfo.InvariantCulture);
            rows.Add(values);
        }
        return rows;
    }
}

/// <summary>Just enough JSON for the test vectors (objects, arrays, strings, numbers, literals).</summary>
internal sealed class MiniJson
{
    private readonly string _s;
    private int _i;

    private MiniJson(string s) { _s = s; }

    public static object Parse(string text)
    {
        var parser = new MiniJson(text);
        object value = parser.Value();
        parser.Skip();
        if (parser._i != text.Length) throw new FormatException("trailing JSON");
        return value;
    }

    private void Skip() { while (_i < _s.Length && char.IsWhiteSpace(_s[_i])) _i++; }

    private object Value()
    {
        Skip();
        char c = _s[_i];
        if (c == '{')
        {
            var obj = new Dictionary<string, object>();
            _i++; Skip();
            if (_s[_i] == '}') { _i++; return obj; }
            while (true)
            {
                Skip(); string key = (string)Value(); Skip();
                if (_s[_i++] != ':') throw new FormatException("expected ':'");
                obj[key] = Value(); Skip();
                char d = _s[_i++];
                if (d == '}') return obj;
                if (d != ',') throw new FormatException("expected ',' in object");
            }
        }
        if (c == '[')
        {
            var list = new List<object>();
            _i++; Skip();
            if (_s[_i] == ']') { _i++; return list; }
            while (true)
            {
                list.Add(Value()); Skip();
                char d = _s[_i++];
                if (d == ']') return list;
                if (d != ',') throw new FormatException("expected ',' in array");
            }
        }
        if (c == '"')
        {
            var sb = new StringBuilder();
            _i++;
            while (_s[_i] != '"')
            {
                char ch = _s[_i++];
                if (ch != '\\') { sb.Append(ch); continue; }
                char e = _s[_i++];
                switch (e)
                {
                    case 'n': sb.Append('\n'); break;
                    case 't': sb.Append('\t'); break;
                    case 'r': sb.Append('\r'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'u': sb.Append((char)Convert.ToInt32(_s.Substring(_i, 4), 16)); _i += 4; break;
                    default: sb.Append(e); break;
                }
            }
            _i++;
            return sb.ToString();
        }
        if (_s.Length - _i >= 4 && _s.Substring(_i, 4) == "true") { _i += 4; return true; }
        if (_s.Length - _i >= 5 && _s.Substring(_i, 5) == "false") { _i += 5; return false; }
        if (_s.Length - _i >= 4 && _s.Substring(_i, 4) == "null") { _i += 4; return null; }
        int start = _i;
        while (_i < _s.Length && "+-0123456789.eE".IndexOf(_s[_i]) >= 0) _i++;
        if (start == _i) throw new FormatException("unexpected JSON at " + _i);
        return double.Parse(_s.Substring(start, _i - start), NumberStyles.Float, CultureInfo.InvariantCulture);
    }
}

/// <summary>
/// Answers one request per line so Python can compare the C# world math and codecs with its own:
///   obs X Z HEADING VELX VELZ TOPSPEED VX VZ VVX VVZ CUE LASTGESTURE STEPS  -> OBS 32 floats
///   reward FAMILY P0 P1 P2 X Z VELX VELZ GESTURE VX VZ VVX VVZ VFX VFZ PREV SLOT GREETED
///                                   -> REWARD r onTarget success prev slot greeted
///   move X Z HEADING FORWARD TURN TOPSPEED TURNRATE -> MOVE x z heading velx velz speed slow
///   taskdecode HEX                  -> TASK area family params(comma) body(comma) | ERR message
///   taskencode AREA FAMILY P,P|- B,B|-  -> HEX payload
///   ackencode AREA TID ACCEPTED(0/1) VERSION REASON_HEX -> HEX payload
///   chunks NUM_AREAS HEX,HEX,...    -> per chunk: RESULT area tid flags envelope_hex|reason
/// </summary>
internal static class LineRequests
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static int Run(string path)
    {
        var obs = new float[AvatarContract.ObservationSize];
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0) continue;
            var f = line.Split(' ');
            switch (f[0])
            {
                case "obs":
                {
                    var input = new AvatarObservationInput
                    {
                        X = D(f[1]), Z = D(f[2]), Heading = D(f[3]), VelX = D(f[4]), VelZ = D(f[5]), TopSpeed = D(f[6]),
                        VisitorX = D(f[7]), VisitorZ = D(f[8]), VisitorVelX = D(f[9]), VisitorVelZ = D(f[10]),
                        VisitorGesture = int.Parse(f[11], Inv), LastGesture = int.Parse(f[12], Inv), StepsTaken = int.Parse(f[13], Inv),
                        LastLandmark = int.Parse(f[14], Inv),
                    };
                    AvatarObservations.Write(input, obs);
                    var sb = new StringBuilder("OBS");
                    foreach (var v in obs) sb.Append(' ').Append(v.ToString("R", Inv));
                    Console.WriteLine(sb.ToString());
                    break;
                }
                case "touch":
                    Console.WriteLine("TOUCH " + PlazaMath.TouchedLandmark(D(f[1]), D(f[2]), int.Parse(f[3], Inv)).ToString(Inv));
                    break;
                case "reward":
                {
                    var family = (ScenarioFamily)int.Parse(f[1], Inv);
                    int count = AvatarContract.FamilyParams[(int)family].Length;
                    var parameters = new float[count];
                    for (int i = 0; i < count; i++) parameters[i] = (float)D(f[2 + i]);
                    var task = new AvatarTask(family, parameters, null);
                    var frame = new RewardFrame
                    {
                        X = D(f[5]), Z = D(f[6]), VelX = D(f[7]), VelZ = D(f[8]), Gesture = int.Parse(f[9], Inv),
                        VisitorX = D(f[10]), VisitorZ = D(f[11]), VisitorVelX = D(f[12]), VisitorVelZ = D(f[13]),
                        VisitorForwardX = D(f[14]), VisitorForwardZ = D(f[15]),
                    };
                    var memory = new RewardMemory { PrevDist = D(f[16]), Slot = int.Parse(f[17], Inv), Greeted = f[18] == "1" };
                    double r = ScenarioRewards.Reward(task, frame, ref memory, out bool onTarget, out bool success);
                    Console.WriteLine("REWARD " + r.ToString("R", Inv) + " " + B(onTarget) + " " + B(success) + " "
                        + memory.PrevDist.ToString("R", Inv) + " " + memory.Slot + " " + B(memory.Greeted));
                    break;
                }
                case "move":
                {
                    var body = AvatarBody.AtRest(D(f[1]), D(f[2]), D(f[3]));
                    body.Step(D(f[4]), D(f[5]), 0.0, 0.0, D(f[6]), D(f[7]));
                    Console.WriteLine("MOVE " + body.X.ToString("R", Inv) + " " + body.Z.ToString("R", Inv) + " " + body.Heading.ToString("R", Inv) + " "
                        + body.VelX.ToString("R", Inv) + " " + body.VelZ.ToString("R", Inv) + " " + body.Speed.ToString("R", Inv) + " " + B(body.Slow));
                    break;
                }
                case "taskdecode":
                    try
                    {
                        var m = TaskMessage.Decode(Hex(f.Length > 1 ? f[1] : ""));
                        Console.WriteLine("TASK " + m.Area + " " + (m.Family.Length == 0 ? "-" : m.Family) + " " + Floats(m.Params) + " " + Floats(m.Body));
                    }
                    catch (FormatException err) { Console.WriteLine("ERR " + err.Message); }
                    break;
                case "taskencode":
                {
                    var m = new TaskMessage { Area = int.Parse(f[1], Inv), Family = f[2] == "-" ? "" : f[2], Params = ParseFloats(f[3]), Body = ParseFloats(f[4]) };
                    Console.WriteLine("HEX " + ToHex(m.Encode()));
                    break;
                }
                case "ackencode":
                {
                    string reason = Encoding.ASCII.GetString(Hex(f.Length > 5 ? f[5] : ""));
                    var bytes = PolicyChannelProtocol.EncodeAck(int.Parse(f[1], Inv), int.Parse(f[2], Inv), f[3] == "1", ulong.Parse(f[4], Inv), reason);
                    Console.WriteLine("HEX " + ToHex(bytes));
                    break;
                }
                case "chunks":
                {
                    var assembler = new PolicyTransferAssembler(int.Parse(f[1], Inv));
                    foreach (var chunk in f[2].Split(','))
                    {
                        var result = assembler.Receive(Hex(chunk), out int area, out int tid, out int flags, out byte[] envelope, out string reason);
                        Console.WriteLine(result + " " + area + " " + tid + " " + flags + " " + (envelope != null ? ToHex(envelope) : Encoding.ASCII.GetBytes(reason).Length == 0 ? "-" : ToHex(Encoding.ASCII.GetBytes(reason))));
                    }
                    break;
                }
                default:
                    Console.WriteLine("ERR unknown request " + f[0]);
                    return 1;
            }
        }
        return 0;
    }

    private static double D(string s) => double.Parse(s, NumberStyles.Float, Inv);
    private static string B(bool b) => b ? "1" : "0";

    private static float[] ParseFloats(string s)
    {
        if (s == "-") return new float[0];
        var parts = s.Split(',');
        var values = new float[parts.Length];
        for (int i = 0; i < parts.Length; i++) values[i] = float.Parse(parts[i], NumberStyles.Float, Inv);
        return values;
    }

    private static string Floats(float[] values)
    {
        if (values.Length == 0) return "-";
        var parts = new string[values.Length];
        for (int i = 0; i < values.Length; i++) parts[i] = values[i].ToString("R", Inv);
        return string.Join(",", parts);
    }

    private static byte[] Hex(string s)
    {
        if (s == "-") return new byte[0];
        var bytes = new byte[s.Length / 2];
        for (int i = 0; i < bytes.Length; i++) bytes[i] = Convert.ToByte(s.Substring(2 * i, 2), 16);
        return bytes;
    }

    private static string ToHex(byte[] bytes)
    {
        if (bytes.Length == 0) return "-";
        var sb = new StringBuilder(bytes.Length * 2);
        foreach (var b in bytes) sb.Append(b.ToString("x2"));
        return sb.ToString();
    }
}
