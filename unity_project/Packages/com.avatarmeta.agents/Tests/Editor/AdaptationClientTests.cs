using System;
using NUnit.Framework;

namespace AvatarMeta.Tests
{
    /// <summary>
    /// EditMode tests of the adaptation client's network-free parts. The full set (Subscribe and
    /// Adapt over a scripted transport, signed envelopes from Python) runs under mono in CI
    /// (tools/csharp/ClientRunner.cs, tests/test_unity_csharp.py).
    /// </summary>
    [TestFixture]
    public sealed class AdaptationClientTests
    {
        [Test]
        public void BackoffGrowsWithinJitterAndCaps()
        {
            var schedule = new BackoffSchedule(TimeSpan.FromSeconds(1), 1.6, 0.2, TimeSpan.FromSeconds(30), new Random(3));
            double nominal = 1.0;
            for (int i = 0; i < 12; i++)
            {
                double delay = schedule.Next().TotalSeconds;
                Assert.IsTrue(delay >= 0.8 * nominal - 1e-6 && delay <= 1.2 * nominal + 1e-6, "attempt " + i + ": " + delay + " s vs " + nominal + " s");
                nominal = Math.Min(nominal * 1.6, 30.0);
            }
            schedule.Reset();
            Assert.AreEqual(1.0, schedule.Next().TotalSeconds, 0.2 + 1e-6);
        }

        [Test]
        public void BearerTokenMetadata()
        {
            var headers = CallHeaders.Build("token-123");
            Assert.AreEqual(1, headers.Count);
            Assert.AreEqual("authorization", headers[0].Key);
            Assert.AreEqual("Bearer token-123", headers[0].Value);
            Assert.AreEqual(0, CallHeaders.Build("").Count);
            Assert.Throws<ArgumentException>(() => CallHeaders.Build("a\r\nb"));
        }

        [Test]
        public void PlaintextOnlyOnLoopback()
        {
            Assert.IsTrue(AdaptationClientOptions.IsLoopback("127.0.0.1:50061"));
            Assert.IsTrue(AdaptationClientOptions.IsLoopback("[::1]:50061"));
            Assert.IsFalse(AdaptationClientOptions.IsLoopback("game.example.com:443"));
            Assert.Throws<ArgumentException>(() => new AdaptationClientOptions { Address = "game.example.com:443" }.Validate());
            new AdaptationClientOptions { Address = "game.example.com:443", UseTls = true }.Validate();
        }

        [Test]
        public void InboxKeepsTheNewest()
        {
            var inbox = new MainThreadInbox<int>(2);
            inbox.Post(1);
            inbox.Post(2);
            Assert.IsFalse(inbox.Post(3));
            int first;
            Assert.IsTrue(inbox.TryTake(out first));
            Assert.AreEqual(2, first);
            Assert.AreEqual(1L, inbox.Dropped);
        }

        [Test]
        public void SubscribeRequestWireFormat()
        {
            byte[] bytes = AdaptationWire.EncodeSubscribeRequest("AvatarAgent", "greet/3", 300);
            var reader = new ProtoWireReader(bytes, 0, bytes.Length);
            int wire;
            Assert.AreEqual(1, reader.ReadTag(out wire));
            Assert.AreEqual("AvatarAgent", reader.ReadString());
            Assert.AreEqual(2, reader.ReadTag(out wire));
            Assert.AreEqual("greet/3", reader.ReadString());
            Assert.AreEqual(3, reader.ReadTag(out wire));
            Assert.AreEqual(300UL, reader.ReadVarint());
            Assert.IsFalse(reader.HasMore);
        }
    }
}
