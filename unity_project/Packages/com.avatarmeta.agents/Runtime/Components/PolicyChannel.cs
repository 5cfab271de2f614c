using System;
using Unity.MLAgents;
using Unity.MLAgents.SideChannels;
using UnityEngine;

namespace AvatarMeta
{
    /// <summary>
    /// Receives chunked, signed PolicyWeights envelopes from the trainer (GUID
    /// <see cref="AvatarContract.PolicyChannelId"/>, layout in docs/exports.md), verifies each
    /// complete transfer with the environment's trusted key, stages it on the target area(s)
    /// (taking effect at the next decision) and answers with an ACK record plus the Stats
    /// <c>Avatar/Policy/Version</c> (most recent) or <c>Avatar/Policy/Rejected</c> (sum).
    /// </summary>
    public sealed class PolicyChannel : SideChannel
    {
        /// <summary>Stats key of the most recent accepted version.</summary>
        public const string VersionStat = "Avatar/Policy/Version";
        /// <summary>Stats key counting refused transfers.</summary>
        public const string RejectedStat = "Avatar/Policy/Rejected";

        private readonly AvatarEnvironment _environment;
        private readonly PolicyTransferAssembler _assembler;

        /// <summary>Creates the channel for <paramref name="environment"/>'s areas.</summary>
        public PolicyChannel(AvatarEnvironment environment)
        {
            ChannelId = new Guid(AvatarContract.PolicyChannelId);
            _environment = environment;
            _assembler = new PolicyTransferAssembler(Math.Max(1, environment.Areas.Count));
        }

        /// <inheritdoc/>
        protected override void OnMessageReceived(IncomingMessage msg)
        {
            var result = _assembler.Receive(msg.GetRawBytes(), out int area, out int transferId, out int flags, out byte[] envelope, out string reason);
            switch (result)
            {
                case ChunkResult.Ignored:
                    Debug.LogWarning("PolicyChannel: " + reason + "; ignored");
                    return;
                case ChunkResult.Incomplete:
                    return;
                case ChunkResult.Refused:
                    Acknowledge(area, transferId, false, 0, reason);
                    return;
            }

            PolicyNetwork network;
            try
            {
                var data = SignedPolicyLoader.Open(envelope, _environment.TrustedKey);
                network = new PolicyNetwork(data);
                if (network.ObservationSize != AvatarContract.ObservationSize)
                {
                    Acknowledge(area, transferId, false, network.Version,
                        "policy observes " + network.ObservationSize + " values, the contract " + AvatarContract.ObservationSize);
                    return;
                }
            }
            catch (PolicyVerificationException err) { Acknowledge(area, transferId, false, 0, err.Message); return; }
            catch (FormatException err) { Acknowledge(area, transferId, false, 0, err.Message); return; }

            bool inference = (flags & PolicyChannelProtocol.FlagInference) != 0;
            var areas = _environment.Areas;
            for (int i = 0; i < areas.Count; i++)
            {
                if (area == -1 || areas[i].AreaIndex == area) areas[i].ReceivePolicy(network, inference);
            }
            Debug.Log("PolicyChannel: area " + area + " now has policy version " + network.Version + " (task '" + network.TaskId + "', " + envelope.Length + " bytes)");
            Acknowledge(area, transferId, true, network.Version, "");
        }

        private void Acknowledge(int area, int transferId, bool accepted, ulong version, string reason)
        {
            if (!accepted) Debug.LogWarning("PolicyChannel: refused transfer " + transferId + " for area " + area + ": " + reason);
            using (var message = new OutgoingMessage())
            {
                message.SetRawBytes(PolicyChannelProtocol.EncodeAck(area, transferId, accepted, version, reason));
                QueueMessageToSend(message);
            }
            if (Academy.IsInitialized)
            {
                if (accepted) Academy.Instance.StatsRecorder.Add(VersionStat, version, StatAggregationMethod.MostRecent);
                else Academy.Instance.StatsRecorder.Add(RejectedStat, 1f, StatAggregationMethod.Sum);
            }
        }
    }
}
