using System;
using System.Globalization;
using System.Text.RegularExpressions;
using NUnit.Framework;
using UnityEngine;

namespace AvatarMeta.Tests
{
    /// <summary>
    /// EditMode tests of the pure-C# evaluator on the shared vectors (tests/vectors/policy_v1.json,
    /// copied next to this file as policy_v1.json.txt so Unity imports it as a TextAsset-readable file).
    /// The same checks run under mono in CI (tests/test_unity_csharp.py).
    /// </summary>
    [TestFixture]
    public sealed class StreamedPolicyTests
    {
        private const string VectorsPath = "Packages/com.avatarmeta.agents/Tests/Editor/policy_v1.json.txt";

        private static string Vectors() => System.IO.File.ReadAllText(VectorsPath);

        private static string JsonString(string json, string key)
        {
            var match = Regex.Match(json, "\"" + key + "\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"");
            if (!match.Success) throw new FormatException("missing " + key);
            return match.Groups[1].Value.Replace("\\n", "\n").Replace("\\/", "/");
        }

        private static double[][] JsonMatrix(string json, string key)
        {
            var match = Regex.Match(json, "\"" + key + "\"\\s*:\\s*\\[\\s*((?:\\[[^\\[\\]]*\\]\\s*,?\\s*)+)\\]");
            if (!match.Success) throw new FormatException("missing " + key);
            var rows = Regex.Matches(match.Groups[1].Value, "\\[([^\\[\\]]*)\\]");
            var result = new double[rows.Count][];
            for (int r = 0; r < rows.Count; r++)
            {
                var cells = rows[r].Groups[1].Value.Split(',');
                result[r] = new double[cells.Length];
                for (int c = 0; c < cells.Length; c++) result[r][c] = double.Parse(cells[c].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture);
            }
            return result;
        }

        [Test]
        public void MatchesTorchOnSharedVectors()
        {
            string json = Vectors();
            var key = PolicyPublicKey.FromPem(JsonString(json, "public_key_pem"));
            var policy = new StreamedPolicy();
            var network = policy.Load(Convert.FromBase64String(JsonString(json, "envelope_b64")), key);
            var obs = JsonMatrix(json, "obs");
            var masks = JsonMatrix(json, "action_mask_masked");
            var expectedContinuous = JsonMatrix(json, "expected_continuous");
            var expectedDiscrete = JsonMatrix(json, "expected_discrete");
            var observation = new float[network.ObservationSize];
            var mask = new bool[network.MaskSize];
            var continuous = new float[network.ContinuousSize];
            var discrete = new int[network.BranchCount];
            for (int row = 0; row < obs.Length; row++)
            {
                for (int i = 0; i < observation.Length; i++) observation[i] = (float)obs[row][i];
                for (int i = 0; i < mask.Length; i++) mask[i] = masks[row][i] != 0;
                Assert.IsTrue(policy.Decide(observation, mask, continuous, discrete));
                for (int c = 0; c < continuous.Length; c++) Assert.AreEqual(expectedContinuous[row][c], continuous[c], 1e-5, "row " + row);
                Assert.AreEqual((int)expectedDiscrete[row][0], discrete[0]);
            }
        }

        [Test]
        public void RefusesTamperedEnvelope()
        {
            string json = Vectors();
            var key = PolicyPublicKey.FromPem(JsonString(json, "public_key_pem"));
            var tampered = Convert.FromBase64String(JsonString(json, "tampered_envelope_b64"));
            Assert.Throws<PolicyVerificationException>(() => new StreamedPolicy().Load(tampered, key));
        }

        [Test]
        public void RefusesWithoutKey()
        {
            var envelope = Convert.FromBase64String(JsonString(Vectors(), "envelope_b64"));
            Assert.Throws<PolicyVerificationException>(() => new StreamedPolicy().Load(envelope, null));
        }

        [Test]
        public void NoDecisionBeforeFirstVersion()
        {
            var policy = new StreamedPolicy();
            Assert.IsFalse(policy.Decide(new float[AvatarContract.ObservationSize], null, new float[2], new int[1]));
            Debug.Log("StreamedPolicy stays silent until a verified version is staged");
        }
    }
}
