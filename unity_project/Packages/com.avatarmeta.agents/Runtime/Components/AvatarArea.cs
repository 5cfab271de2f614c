using System;
using System.Collections.Generic;
using Unity.MLAgents;
using UnityEngine;

namespace AvatarMeta
{
    /// <summary>
    /// One plaza area: its avatars, its scripted visitor and landmarks, and the task it runs.
    /// It owns the decision cycle so that the scene steps exactly like the headless world:
    /// at each Academy step it applies the actions chosen at the previous decision to every
    /// avatar and to the visitor (one <see cref="PlazaMath.DecisionDt"/> of simulated time),
    /// resolves collisions, hands out the scenario rewards, ends the episode on success or after
    /// <see cref="AvatarContract.MaxEpisodeSteps"/> decisions, and requests the next decisions.
    /// </summary>
    /// <remarks>
    /// Positions are relative to this transform (the plaza centre); the obstacles and landmarks
    /// are the contract's, so the scene must place its obstacle meshes at
    /// <see cref="AvatarContract.Obstacles"/> (see Documentation~/index.md). Stats
    /// <c>Avatar/&lt;family&gt;/Episode Return</c> and <c>Avatar/&lt;family&gt;/Success Rate</c> are
    /// recorded for every finished episode, as the headless world reports them.
    /// </remarks>
    [DisallowMultipleComponent]
    [AddComponentMenu("avatar-meta/Avatar Area")]
    public sealed class AvatarArea : MonoBehaviour
    {
        [Tooltip("Index used by the TaskChannel and PolicyChannel (0..areas-1).")]
        [SerializeField] private int areaIndex;

        [Tooltip("The learning avatars of this area (found among the children when empty).")]
        [SerializeField] private List<AvatarAgent> avatars = new List<AvatarAgent>();

        [Tooltip("Optional transform moved along with the scripted visitor.")]
        [SerializeField] private Transform visitorBody;

        [Tooltip("Optional transforms placed at the contract's three landmarks.")]
        [SerializeField] private Transform[] landmarkMarkers = new Transform[0];

        [Tooltip("Family used when no task is assigned (-1: random per episode, or the EnvironmentParameters 'family' key).")]
        [SerializeField] private int defaultFamily = -1;

        [Tooltip("Seed of this area's random stream (tasks, spawns, visitor, actuation noise).")]
        [SerializeField] private int seed = 1;

        private ScriptedVisitor _visitor;
        private System.Random _random;
        private AvatarTask _assigned;
        private AvatarTask _pendingAssignment;
        private bool _hasPendingAssignment;
        private AvatarTask _task;
        private int _steps;
        private bool _episodeRunning;
        private bool _actionsPending;
        private readonly StreamedPolicy _policy = new StreamedPolicy();
        private bool _inferenceRequested;

        /// <summary>Index on the TaskChannel / PolicyChannel.</summary>
        public int AreaIndex => areaIndex;
        /// <summary>The task of the running episode.</summary>
        public AvatarTask CurrentTask => _task;
        /// <summary>Decisions taken in the running episode.</summary>
        public int StepsTaken => _steps;
        /// <summary>The scripted visitor.</summary>
        public ScriptedVisitor Visitor => _visitor;
        /// <summary>The area's streamed policy (PolicyChannel / initial policy).</summary>
        public StreamedPolicy Policy => _policy;
        /// <summary>True when the trainer pushed a policy with the inference flag: avatars act with it.</summary>
        public bool InferenceRequested => _inferenceRequested;
        /// <summary>The avatars of this area.</summary>
        public IReadOnlyList<AvatarAgent> Avatars => avatars;

        private void Awake()
        {
            _random = new System.Random(seed * 7919 + areaIndex);
            _visitor = new ScriptedVisitor(seed * 104729 + areaIndex);
            if (avatars.Count == 0) avatars.AddRange(GetComponentsInChildren<AvatarAgent>(true));
            foreach (var avatar in avatars) avatar.Area = this;
            for (int i = 0; i < landmarkMarkers.Length && i < AvatarContract.Landmarks.GetLength(0); i++)
            {
                if (landmarkMarkers[i] != null)
                    landmarkMarkers[i].localPosition = new Vector3(AvatarContract.Landmarks[i, 0], landmarkMarkers[i].localPosition.y, AvatarContract.Landmarks[i, 1]);
            }
        }

        private void OnEnable()
        {
            var environment = AvatarEnvironment.Active != null ? AvatarEnvironment.Active : GetComponentInParent<AvatarEnvironment>();
            if (environment != null)
            {
                environment.Register(this);
                if (environment.InitialPolicy != null && !_policy.HasPolicy) _policy.Stage(environment.InitialPolicy);
            }
            Academy.Instance.AgentPreStep += OnAgentPreStep;
            Academy.Instance.OnEnvironmentReset += OnEnvironmentReset;
        }

        private void OnDisable()
        {
            if (AvatarEnvironment.Active != null) AvatarEnvironment.Active.Unregister(this);
            if (Academy.IsInitialized)
            {
                Academy.Instance.AgentPreStep -= OnAgentPreStep;
                Academy.Instance.OnEnvironmentReset -= OnEnvironmentReset;
            }
        }

        /// <summary>A trainer RESET restarts every area (episodes cut short are not reported), as in the headless world.</summary>
        private void OnEnvironmentReset()
        {
            _episodeRunning = false;
            _actionsPending = false;
        }

        /// <summary>Runs <paramref name="task"/> from the next episode start on; null returns to default sampling.</summary>
        public void AssignTask(AvatarTask task)
        {
            _pendingAssignment = task;
            _hasPendingAssignment = true;
        }

        /// <summary>Stages a verified policy for the next decision of this area's avatars.</summary>
        public void ReceivePolicy(PolicyNetwork network, bool inference)
        {
            _policy.Stage(network);
            if (inference) _inferenceRequested = true;
            for (int i = 0; i < avatars.Count; i++) avatars[i].RefreshControlMode();
        }

        /// <summary>Called by an avatar's <c>OnEpisodeBegin</c>: starts the area's episode if needed and places the avatar.</summary>
        internal void OnAvatarEpisodeBegin(AvatarAgent avatar)
        {
            if (!_episodeRunning) StartEpisode();
            SpawnAvatar(avatar);
        }

        /// <summary>Called by an avatar's <c>OnActionReceived</c>: the area applies the actions at the next step.</summary>
        internal void NotifyActionReceived() => _actionsPending = true;

        private void OnAgentPreStep(int academyStepCount)
        {
            if (!_episodeRunning) StartEpisode();
            if (_actionsPending)
            {
                _actionsPending = false;
                Simulate();
            }
            for (int i = 0; i < avatars.Count; i++) avatars[i].RequestDecision();
        }

        private void StartEpisode()
        {
            if (_hasPendingAssignment)
            {
                _assigned = _pendingAssignment;
                _hasPendingAssignment = false;
            }
            _task = _assigned ?? SampleTask();
            _visitor.Start(ScenarioRewards.VisitorBehaviourOf(_task.Family), ScenarioRewards.VisitorSpeed(_task));
            _steps = 0;
            _episodeRunning = true;
            SyncVisitorTransform();
        }

        private AvatarTask SampleTask()
        {
            int family = defaultFamily;
            if (Academy.IsInitialized)
                family = (int)Academy.Instance.EnvironmentParameters.GetWithDefault(AvatarContract.EnvParamFamilyKey, family);
            if (family >= AvatarContract.FamilyNames.Length) family = -1;
            return AvatarTask.Sample(_random, family);
        }

        private void SpawnAvatar(AvatarAgent avatar)
        {
            double clearance = PlazaMath.AvatarRadius + 0.2;
            double x, z;
            var range = SpawnRange(_task.Family);
            if (range.HasValue)
            {
                double radius = range.Value.x + (range.Value.y - range.Value.x) * _random.NextDouble();
                double angle = (_random.NextDouble() * 2.0 - 1.0) * Math.PI;
                x = _visitor.X + radius * Math.Cos(angle);
                z = _visitor.Z + radius * Math.Sin(angle);
            }
            else
            {
                x = (_random.NextDouble() * 2.0 - 1.0) * 8.5;
                z = (_random.NextDouble() * 2.0 - 1.0) * 8.5;
            }
            PlazaMath.PushOut(ref x, ref z, clearance);
            double heading = (_random.NextDouble() * 2.0 - 1.0) * Math.PI;
            avatar.ResetBody(_task, x, z, heading);
        }

        private static Vector2? SpawnRange(ScenarioFamily family)
        {
            switch (family)
            {
                case ScenarioFamily.FollowVisitor: return new Vector2(2f, 5f);
                case ScenarioFamily.GreetVisitor: return new Vector2(3f, 7f);
                case ScenarioFamily.KeepDistance: return new Vector2(2f, 4f);
                case ScenarioFamily.PaceMatch: return new Vector2(1f, 4f);
                default: return null;
            }
        }

        /// <summary>One decision for the whole area: move, collide, reward, maybe end the episode.</summary>
        private void Simulate()
        {
            // The visitor reacts to where the nearest avatar stood when the decision began.
            NearestAvatar(out double nearX, out double nearZ);
            _visitor.Plan(nearX, nearZ, out double visitorToX, out double visitorToZ);
            for (int i = 0; i < avatars.Count; i++) avatars[i].Move(_random);
            PlazaMath.PushOut(ref visitorToX, ref visitorToZ, PlazaMath.AvatarRadius);
            _visitor.Settle(visitorToX, visitorToZ);
            SyncVisitorTransform();

            _steps++;
            bool anySuccess = false;
            for (int i = 0; i < avatars.Count; i++) anySuccess |= avatars[i].ScoreDecision(_visitor);
            bool ended = anySuccess || _steps >= AvatarContract.MaxEpisodeSteps;
            if (!ended) return;

            // Freeze every final observation before the next episode moves the visitor.
            for (int i = 0; i < avatars.Count; i++) avatars[i].FreezeObservation();
            _episodeRunning = false;
            string family = AvatarContract.FamilyNames[(int)_task.Family];
            for (int i = 0; i < avatars.Count; i++)
            {
                var avatar = avatars[i];
                bool success = avatar.EpisodeSucceeded(_steps);
                if (Academy.IsInitialized)
                {
                    Academy.Instance.StatsRecorder.Add("Avatar/" + family + "/Episode Return", (float)avatar.EpisodeReturn, StatAggregationMethod.Average);
                    Academy.Instance.StatsRecorder.Add("Avatar/" + family + "/Success Rate", success ? 1f : 0f, StatAggregationMethod.Average);
                }
                if (avatar.CompletedTask) avatar.EndEpisode();
                else avatar.EpisodeInterrupted();
            }
        }

        private void NearestAvatar(out double x, out double z)
        {
            x = 0; z = 0;
            double best = double.MaxValue;
            for (int i = 0; i < avatars.Count; i++)
            {
                double dx = avatars[i].BodyX - _visitor.X, dz = avatars[i].BodyZ - _visitor.Z;
                double d = dx * dx + dz * dz;
                if (d < best) { best = d; x = avatars[i].BodyX; z = avatars[i].BodyZ; }
            }
        }

        private void SyncVisitorTransform()
        {
            if (visitorBody == null) return;
            visitorBody.localPosition = new Vector3((float)_visitor.X, visitorBody.localPosition.y, (float)_visitor.Z);
            visitorBody.localRotation = Quaternion.Euler(0f, (float)(PlazaMath.YawOf(_visitor.ForwardX, _visitor.ForwardZ) * Mathf.Rad2Deg), 0f);
        }
    }
}
