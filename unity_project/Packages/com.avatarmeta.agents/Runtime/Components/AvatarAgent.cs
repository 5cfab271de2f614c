using System;
using Unity.MLAgents;
using Unity.MLAgents.Actuators;
using Unity.MLAgents.Policies;
using Unity.MLAgents.Sensors;
using UnityEngine;

namespace AvatarMeta
{
    /// <summary>Who chooses an avatar's actions.</summary>
    public enum AvatarControlMode
    {
        /// <summary>ML-Agents as configured on Behavior Parameters (trainer, ONNX model or heuristic).</summary>
        Trainer = 0,
        /// <summary>The area's streamed (adapted) policy; keyboard until the first version arrives.</summary>
        Adapted = 1,
        /// <summary>Adapted when no trainer is connected (or the trainer asked for inference) and a policy is loaded; Trainer otherwise.</summary>
        Auto = 2,
    }

    /// <summary>
    /// The learning avatar, implementing contract v1 (<see cref="AvatarContract"/>): one vector
    /// observation of <see cref="AvatarContract.ObservationSize"/> floats in contract order,
    /// 2 continuous actions (forward, turn in [-1, 1]) and one gesture branch of 4 whose
    /// gestures 1-3 are masked while the avatar moves faster than half its top speed.
    /// </summary>
    /// <remarks>
    /// Behavior Parameters must match the contract: name <see cref="AvatarContract.BehaviorName"/>,
    /// vector observation size 35 (AvatarContract.ObservationSize), stacking 1, continuous actions 2, discrete branches [4], and
    /// Max Step 0 (the area ends episodes after <see cref="AvatarContract.MaxEpisodeSteps"/>
    /// decisions). Decisions are requested by the <see cref="AvatarArea"/>; do not add a
    /// DecisionRequester. Continuous actions are clamped to [-1, 1] and never multiplied by 3
    /// (docs/exports.md, continuous convention). Per-decision paths allocate nothing.
    /// </remarks>
    [AddComponentMenu("avatar-meta/Avatar Agent")]
    public sealed class AvatarAgent : Agent
    {
        [Tooltip("Trainer: Behavior Parameters decide. Adapted: the area's streamed policy. Auto: adapted when no trainer is connected.")]
        [SerializeField] private AvatarControlMode controlMode = AvatarControlMode.Auto;

        [Tooltip("Height at which the avatar's transform is kept.")]
        [SerializeField] private float bodyHeight = 0f;

        private readonly float[] _observation = new float[AvatarContract.ObservationSize];
        private readonly bool[] _mask = new bool[AvatarContract.DiscreteBranches[0]];
        private readonly float[] _policyContinuous = new float[AvatarContract.NumContinuousActions];
        private readonly int[] _policyDiscrete = new int[1];
        private BehaviorParameters _behaviorParameters;
        private AvatarTask _task;
        private RewardMemory _memory;
        private bool _observationFrozen;

        private AvatarBody _body = AvatarBody.AtRest(0.0, 0.0, 0.0);
        private int _lastGesture;
        private int _lastLandmark = -1;
        private double _commandForward, _commandTurn;
        private int _commandGesture;

        private double _episodeReturn;
        private int _onTargetSteps;
        private bool _lastOnTarget;
        private bool _completed;

        /// <summary>The area this avatar belongs to (set by the area).</summary>
        public AvatarArea Area { get; internal set; }
        /// <summary>Control mode (see <see cref="AvatarControlMode"/>).</summary>
        public AvatarControlMode ControlMode { get => controlMode; set { controlMode = value; UpdateBehaviorType(); } }
        /// <summary>Area-local position x, z (metres).</summary>
        public double BodyX => _body.X;
        /// <summary>Area-local position z (metres).</summary>
        public double BodyZ => _body.Z;
        /// <summary>Heading (yaw, radians; 0 faces +z, positive turns right).</summary>
        public double Heading => _body.Heading;
        /// <summary>Sum of rewards in the running episode.</summary>
        public double EpisodeReturn => _episodeReturn;
        /// <summary>The task was completed this episode (greet_visitor).</summary>
        public bool CompletedTask => _completed;
        /// <summary>Version of the streamed policy that made the last decision (0: none).</summary>
        public ulong RunningPolicyVersion => Area != null ? Area.Policy.ActiveVersion : 0UL;
        /// <summary>True while the streamed policy chooses this avatar's actions.</summary>
        public bool UsesStreamedPolicy { get; private set; }
        /// <summary>The last observation vector (read-only use; reused every decision).</summary>
        public float[] LastObservation => _observation;

        /// <summary>Raised when the avatar performs a gesture other than None (for animation).</summary>
        public event Action<AvatarAgent, Gesture> GesturePerformed;

        /// <inheritdoc/>
        public override void Initialize()
        {
            _behaviorParameters = GetComponent<BehaviorParameters>();
            MaxStep = 0;
            if (Area == null) Area = GetComponentInParent<AvatarArea>();
            if (Area == null) Debug.LogError("AvatarAgent '" + name + "' is not inside an AvatarArea", this);
            UpdateBehaviorType();
        }

        /// <inheritdoc/>
        public override void OnEpisodeBegin()
        {
            _observationFrozen = false;
            UpdateBehaviorType();
            if (Area != null) Area.OnAvatarEpisodeBegin(this);
        }

        /// <inheritdoc/>
        public override void CollectObservations(VectorSensor sensor)
        {
            if (!_observationFrozen) ComputeObservation();
            for (int i = 0; i < _observation.Length; i++) sensor.AddObservation(_observation[i]);
        }

        /// <inheritdoc/>
        public override void WriteDiscreteActionMask(IDiscreteActionMask actionMask)
        {
            for (int g = 1; g < _mask.Length; g++) actionMask.SetActionEnabled(0, g, !_mask[g]);
        }

        /// <inheritdoc/>
        public override void OnActionReceived(ActionBuffers actions)
        {
            var continuous = actions.ContinuousActions;
            _commandForward = continuous.Length > 0 ? Sanitise(continuous[AvatarContract.ContinuousForward]) : 0.0;
            _commandTurn = continuous.Length > 1 ? Sanitise(continuous[AvatarContract.ContinuousTurn]) : 0.0;
            var discrete = actions.DiscreteActions;
            int gesture = discrete.Length > 0 ? discrete[0] : 0;
            // Unknown or masked gestures become None, as in the headless world.
            _commandGesture = gesture >= 0 && gesture < _mask.Length && !_mask[gesture] ? gesture : 0;
            if (Area != null) Area.NotifyActionReceived();
        }

        /// <summary>
        /// Adapted mode: the streamed policy's deterministic action. Otherwise keyboard play:
        /// W/S or Up/Down walk, A/D or Left/Right turn, 1/2/3 wave/bow/dance.
        /// </summary>
        public override void Heuristic(in ActionBuffers actionsOut)
        {
            var continuous = actionsOut.ContinuousActions;
            var discrete = actionsOut.DiscreteActions;
            if (UsesStreamedPolicy && Area != null && Area.Policy.Decide(_observation, _mask, _policyContinuous, _policyDiscrete))
            {
                continuous[AvatarContract.ContinuousForward] = _policyContinuous[0];
                continuous[AvatarContract.ContinuousTurn] = _policyContinuous[1];
                discrete[0] = _policyDiscrete[0];
                return;
            }
            float forward = 0f, turn = 0f;
            if (Input.GetKey(KeyCode.W) || Input.GetKey(KeyCode.UpArrow)) forward += 1f;
            if (Input.GetKey(KeyCode.S) || Input.GetKey(KeyCode.DownArrow)) forward -= 1f;
            if (Input.GetKey(KeyCode.D) || Input.GetKey(KeyCode.RightArrow)) turn += 1f;
            if (Input.GetKey(KeyCode.A) || Input.GetKey(KeyCode.LeftArrow)) turn -= 1f;
            continuous[AvatarContract.ContinuousForward] = forward;
            continuous[AvatarContract.ContinuousTurn] = turn;
            int gesture = (int)Gesture.None;
            if (Input.GetKey(KeyCode.Alpha1)) gesture = (int)Gesture.Wave;
            else if (Input.GetKey(KeyCode.Alpha2)) gesture = (int)Gesture.Bow;
            else if (Input.GetKey(KeyCode.Alpha3)) gesture = (int)Gesture.Dance;
            discrete[0] = gesture;
        }

        /// <summary>Places the avatar at rest for a new episode of <paramref name="task"/> (called by the area).</summary>
        internal void ResetBody(AvatarTask task, double x, double z, double heading)
        {
            _task = task;
            _body = AvatarBody.AtRest(x, z, heading);
            _lastGesture = 0;
            _lastLandmark = PlazaMath.TouchedLandmark(x, z, -1);
            _commandForward = _commandTurn = 0.0;
            _commandGesture = 0;
            _episodeReturn = 0.0;
            _onTargetSteps = 0;
            _lastOnTarget = false;
            _completed = false;
            _memory = default(RewardMemory);
            var frame = Frame(Area.Visitor, 0);
            frame.VisitorVelX = frame.VisitorVelZ = 0.0;
            _memory.PrevDist = ScenarioRewards.ShapingDistance(task, frame, _memory);
            SyncTransform();
        }

        /// <summary>Applies the last command for one decision (unicycle with actuation noise; called by the area).</summary>
        internal void Move(System.Random random)
        {
            double noise = _task.ActuationNoise;
            double forwardNoise = noise * Gaussian(random), turnNoise = noise * Gaussian(random);
            _body.Step(_commandForward, _commandTurn, forwardNoise, turnNoise, _task.TopSpeed, _task.TurnRate);
            _lastGesture = _commandGesture;
            _lastLandmark = PlazaMath.TouchedLandmark(_body.X, _body.Z, _lastLandmark);
            if (_commandGesture != 0) GesturePerformed?.Invoke(this, (Gesture)_commandGesture);
            SyncTransform();
        }

        /// <summary>Adds this decision's scenario reward; returns true when the task was completed (called by the area).</summary>
        internal bool ScoreDecision(ScriptedVisitor visitor)
        {
            var frame = Frame(visitor, _lastGesture);
            double reward = ScenarioRewards.Reward(_task, frame, ref _memory, out bool onTarget, out bool success);
            AddReward((float)reward);
            _episodeReturn += reward;
            if (onTarget) _onTargetSteps++;
            _lastOnTarget = onTarget;
            _completed |= success;
            return success;
        }

        /// <summary>Success label of the episode that just ended.</summary>
        internal bool EpisodeSucceeded(int length) =>
            ScenarioRewards.EpisodeSuccess(_task.Family, _onTargetSteps, length, _lastOnTarget, _memory.Slot, _completed);

        /// <summary>Re-evaluates <see cref="AvatarControlMode.Auto"/> (called when a policy arrives).</summary>
        internal void RefreshControlMode() => UpdateBehaviorType();

        /// <summary>Computes the observation now and keeps it for the terminal step (called by the area before ending an episode).</summary>
        internal void FreezeObservation()
        {
            ComputeObservation();
            _observationFrozen = true;
        }

        private void ComputeObservation()
        {
            var visitor = Area.Visitor;
            var input = new AvatarObservationInput
            {
                X = _body.X, Z = _body.Z, Heading = _body.Heading, VelX = _body.VelX, VelZ = _body.VelZ, TopSpeed = _task.TopSpeed,
                VisitorX = visitor.X, VisitorZ = visitor.Z, VisitorVelX = visitor.VelX, VisitorVelZ = visitor.VelZ,
                VisitorGesture = visitor.Cue, LastGesture = _lastGesture, StepsTaken = Area.StepsTaken,
                LastLandmark = _lastLandmark,
            };
            AvatarObservations.Write(input, _observation);
            _mask[0] = false;
            for (int g = 1; g < _mask.Length; g++) _mask[g] = !_body.Slow;
        }

        private RewardFrame Frame(ScriptedVisitor visitor, int gesture) => new RewardFrame
        {
            X = _body.X, Z = _body.Z, VelX = _body.VelX, VelZ = _body.VelZ, Gesture = gesture,
            VisitorX = visitor.X, VisitorZ = visitor.Z, VisitorVelX = visitor.VelX, VisitorVelZ = visitor.VelZ,
            VisitorForwardX = visitor.ForwardX, VisitorForwardZ = visitor.ForwardZ,
        };

        private void UpdateBehaviorType()
        {
            bool adapted = controlMode == AvatarControlMode.Adapted
                || (controlMode == AvatarControlMode.Auto && Area != null && Area.Policy.HasPolicy
                    && (!Academy.Instance.IsCommunicatorOn || Area.InferenceRequested));
            UsesStreamedPolicy = adapted;
            if (_behaviorParameters == null) return;
            var wanted = adapted ? BehaviorType.HeuristicOnly : BehaviorType.Default;
            if (_behaviorParameters.BehaviorType != wanted) _behaviorParameters.BehaviorType = wanted;
        }

        private void SyncTransform()
        {
            transform.localPosition = new Vector3((float)_body.X, bodyHeight, (float)_body.Z);
            transform.localRotation = Quaternion.Euler(0f, (float)(_body.Heading * Mathf.Rad2Deg), 0f);
        }

        private static double Sanitise(float value) => float.IsNaN(value) || float.IsInfinity(value) ? 0.0 : Clamp(value);

        private static double Clamp(double value) => value < -1.0 ? -1.0 : (value > 1.0 ? 1.0 : value);

        private static double Gaussian(System.Random random)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2);
        }
    }
}
