// Compile-only stub of the com.unity.ml-agents 3.0.0 API surface used by com.avatarmeta.agents.
// Declarations only (same names, namespaces and signatures as the package), no behaviour.
// Add a member here only when the package starts using it, with the real signature.
using System;
using System.Collections.Generic;
using UnityEngine;

namespace Unity.MLAgents
{
    public enum StatAggregationMethod
    {
        Average = 0,
        MostRecent = 1,
        Sum = 2,
        Histogram = 3,
    }

    public sealed class StatsRecorder
    {
        public void Add(string key, float value, StatAggregationMethod aggregationMethod = StatAggregationMethod.Average) { }
    }

    public sealed class EnvironmentParameters
    {
        public float GetWithDefault(string key, float defaultValue) { return defaultValue; }
    }

    public class Academy : IDisposable
    {
        public static Academy Instance { get { return null; } }
        public static bool IsInitialized { get { return false; } }
        public bool IsCommunicatorOn { get { return false; } }
        public StatsRecorder StatsRecorder { get { return null; } }
        public EnvironmentParameters EnvironmentParameters { get { return null; } }
        public int StepCount { get { return 0; } }
        public event Action<int> AgentPreStep { add { } remove { } }
        public event Action OnEnvironmentReset { add { } remove { } }
        public void Dispose() { }
    }

    public partial class Agent : MonoBehaviour
    {
        public int MaxStep;
        public int StepCount { get { return 0; } }
        public int CompletedEpisodes { get { return 0; } }
        protected virtual void OnEnable() { }
        protected virtual void OnDisable() { }
        public virtual void Initialize() { }
        public virtual void OnEpisodeBegin() { }
        public virtual void CollectObservations(Sensors.VectorSensor sensor) { }
        public virtual void WriteDiscreteActionMask(Actuators.IDiscreteActionMask actionMask) { }
        public virtual void OnActionReceived(Actuators.ActionBuffers actions) { }
        public virtual void Heuristic(in Actuators.ActionBuffers actionsOut) { }
        public void AddReward(float increment) { }
        public void SetReward(float reward) { }
        public float GetCumulativeReward() { return 0f; }
        public void EndEpisode() { }
        public void EpisodeInterrupted() { }
        public void RequestDecision() { }
        public void RequestAction() { }
    }
}

namespace Unity.MLAgents.Sensors
{
    public class VectorSensor
    {
        public void AddObservation(float observation) { }
        public void AddObservation(int observation) { }
        public void AddObservation(bool observation) { }
        public void AddObservation(IList<float> observation) { }
        public void AddObservation(Vector3 observation) { }
    }
}

namespace Unity.MLAgents.Actuators
{
    public readonly struct ActionSegment<T> where T : struct
    {
        public readonly int Offset;
        public readonly int Length;
        public ActionSegment(T[] actionArray) { Offset = 0; Length = 0; }
        public T this[int index] { get { return default(T); } set { } }
        public void Clear() { }
    }

    public readonly struct ActionBuffers
    {
        public ActionSegment<float> ContinuousActions { get; }
        public ActionSegment<int> DiscreteActions { get; }
        public ActionBuffers(float[] continuousActions, int[] discreteActions) { ContinuousActions = default(ActionSegment<float>); DiscreteActions = default(ActionSegment<int>); }
    }

    public interface IDiscreteActionMask
    {
        void SetActionEnabled(int branch, int actionIndex, bool isEnabled);
    }
}

namespace Unity.MLAgents.Policies
{
    public enum BehaviorType
    {
        Default,
        HeuristicOnly,
        InferenceOnly,
    }

    public class BehaviorParameters : MonoBehaviour
    {
        public BehaviorType BehaviorType { get { return default(BehaviorType); } set { } }
        public string BehaviorName { get { return null; } set { } }
    }
}

namespace Unity.MLAgents.SideChannels
{
    public class IncomingMessage : IDisposable
    {
        public IncomingMessage(byte[] data) { }
        public bool ReadBoolean(bool defaultValue = false) { return defaultValue; }
        public int ReadInt32(int defaultValue = 0) { return defaultValue; }
        public float ReadFloat32(float defaultValue = 0.0f) { return defaultValue; }
        public string ReadString(string defaultValue = default(string)) { return defaultValue; }
        public IList<float> ReadFloatList(IList<float> defaultValue = default(IList<float>)) { return defaultValue; }
        public byte[] GetRawBytes() { return null; }
        public void Dispose() { }
    }

    public class OutgoingMessage : IDisposable
    {
        public void WriteBoolean(bool b) { }
        public void WriteInt32(int i) { }
        public void WriteFloat32(float f) { }
        public void WriteString(string s) { }
        public void WriteFloatList(IList<float> floatList) { }
        public void SetRawBytes(byte[] data) { }
        public void Dispose() { }
    }

    public abstract class SideChannel
    {
        public Guid ChannelId { get; protected set; }
        protected abstract void OnMessageReceived(IncomingMessage msg);
        protected void QueueMessageToSend(OutgoingMessage msg) { }
    }

    public static class SideChannelManager
    {
        public static void RegisterSideChannel(SideChannel sideChannel) { }
        public static void UnregisterSideChannel(SideChannel sideChannel) { }
    }
}
