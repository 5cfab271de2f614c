using System;

namespace AvatarMeta
{
    /// <summary>
    /// One task: a scenario family, its hidden parameters (contract order) and a body
    /// (top_speed, turn_rate, actuation_noise). Values are clipped to the contract ranges.
    /// </summary>
    public sealed class AvatarTask
    {
        /// <summary>The scenario family.</summary>
        public ScenarioFamily Family { get; }
        /// <summary>Hidden parameters, <see cref="AvatarContract.FamilyParams"/> order (always 3 slots; unused are 0).</summary>
        public double[] Params { get; } = new double[3];
        /// <summary>Top forward speed, m/s.</summary>
        public double TopSpeed { get; }
        /// <summary>Top turn rate, rad/s.</summary>
        public double TurnRate { get; }
        /// <summary>Standard deviation of the Gaussian noise added to both commands.</summary>
        public double ActuationNoise { get; }

        /// <summary>Builds a task; <paramref name="parameters"/> must have the family's count; <paramref name="body"/> may be null/empty (default body).</summary>
        public AvatarTask(ScenarioFamily family, float[] parameters, float[] body)
        {
            int index = (int)family;
            if (index < 0 || index >= AvatarContract.FamilyParams.Length) throw new ArgumentOutOfRangeException(nameof(family));
            var specs = AvatarContract.FamilyParams[index];
            int count = parameters == null ? 0 : parameters.Length;
            if (count != specs.Length)
                throw new ArgumentException(AvatarContract.FamilyNames[index] + " takes " + specs.Length + " parameters, got " + count);
            Family = family;
            for (int i = 0; i < specs.Length; i++) Params[i] = specs[i].Clip(Finite(parameters[i], specs[i].Name));
            var b = body != null && body.Length > 0 ? body : AvatarContract.DefaultBody;
            if (b.Length != AvatarContract.BodyParams.Length) throw new ArgumentException("body takes " + AvatarContract.BodyParams.Length + " values, got " + b.Length);
            TopSpeed = AvatarContract.BodyParams[0].Clip(Finite(b[0], "top_speed"));
            TurnRate = AvatarContract.BodyParams[1].Clip(Finite(b[1], "turn_rate"));
            ActuationNoise = AvatarContract.BodyParams[2].Clip(Finite(b[2], "actuation_noise"));
        }

        /// <summary>Family index by contract name, or -1.</summary>
        public static int FamilyIndex(string name)
        {
            for (int i = 0; i < AvatarContract.FamilyNames.Length; i++)
                if (AvatarContract.FamilyNames[i] == name) return i;
            return -1;
        }

        /// <summary>The family's mid-range parameters (what python's TaskSpec.make fills in).</summary>
        public static float[] DefaultParams(ScenarioFamily family)
        {
            var specs = AvatarContract.FamilyParams[(int)family];
            var values = new float[specs.Length];
            for (int i = 0; i < specs.Length; i++) values[i] = specs[i].Clip((specs[i].Low + specs[i].High) / 2f);
            return values;
        }

        /// <summary>A uniformly random task (family, parameters, body) from <paramref name="random"/>.</summary>
        public static AvatarTask Sample(Random random, int family = -1)
        {
            if (family < 0) family = random.Next(AvatarContract.FamilyNames.Length);
            var specs = AvatarContract.FamilyParams[family];
            var parameters = new float[specs.Length];
            for (int i = 0; i < specs.Length; i++)
            {
                double u = random.NextDouble();
                parameters[i] = specs[i].Integer
                    ? specs[i].Clip((float)Math.Floor(specs[i].Low + u * (specs[i].High - specs[i].Low + 1)))
                    : (float)(specs[i].Low + u * (specs[i].High - specs[i].Low));
            }
            var body = new float[AvatarContract.BodyParams.Length];
            for (int i = 0; i < body.Length; i++)
            {
                var spec = AvatarContract.BodyParams[i];
                body[i] = (float)(spec.Low + random.NextDouble() * (spec.High - spec.Low));
            }
            return new AvatarTask((ScenarioFamily)family, parameters, body);
        }

        /// <inheritdoc/>
        public override string ToString() => AvatarContract.FamilyNames[(int)Family] + "(" + Params[0] + ", " + Params[1] + ", " + Params[2] + ")";

        private static float Finite(float value, string name)
        {
            if (float.IsNaN(value) || float.IsInfinity(value)) throw new ArgumentException(name + " is not finite");
            return value;
        }
    }

    /// <summary>The world after one decision, for one avatar (area-local, SI units).</summary>
    public struct RewardFrame
    {
        /// <summary>Avatar position and achieved velocity.</summary>
        public double X, Z, VelX, VelZ;
        /// <summary>Gesture performed this decision (masked gestures are already 0).</summary>
        public int Gesture;
        /// <summary>Visitor position, velocity and facing (unit vector).</summary>
        public double VisitorX, VisitorZ, VisitorVelX, VisitorVelZ, VisitorForwardX, VisitorForwardZ;

        /// <summary>Centre-to-centre distance to the visitor.</summary>
        public double VisitorDistance
        {
            get
            {
                double dx = VisitorX - X, dz = VisitorZ - Z;
                return Math.Sqrt(dx * dx + dz * dz);
            }
        }
    }

    /// <summary>What a family remembers between decisions (python: scenarios.Memory).</summary>
    public struct RewardMemory
    {
        /// <summary>Distance the progress shaping measured at the previous decision.</summary>
        public double PrevDist;
        /// <summary>patrol: landmarks reached so far.</summary>
        public int Slot;
        /// <summary>greet_visitor: the one greeting of the episode has been made.</summary>
        public bool Greeted;
    }

    /// <summary>
    /// Dense rewards of the six scenario families, mirroring python/avatar_meta/world/scenarios.py
    /// and docs/scenarios.md (constants and formulas). Pure and allocation-free.
    /// </summary>
    public static class ScenarioRewards
    {
        /// <summary>reach_landmark / patrol / greet_visitor: reward per metre of progress.</summary>
        public const double ProgressPerM = 0.5;
        /// <summary>Per-decision time cost of the goal-directed families.</summary>
        public const double TimeCost = 0.01;
        /// <summary>A landmark is reached within this distance, metres.</summary>
        public const double ArriveRadius = 1.0;

        /// <summary>Walking speed of the scripted visitor for a task (m/s).</summary>
        public static double VisitorSpeed(AvatarTask task)
        {
            switch (task.Family)
            {
                case ScenarioFamily.ReachLandmark: return 0.6;
                case ScenarioFamily.FollowVisitor: return 0.9;
                case ScenarioFamily.KeepDistance: return 0.7;
                case ScenarioFamily.PaceMatch: return task.Params[2];
                case ScenarioFamily.Patrol: return 0.6;
                default: return 0.0;
            }
        }

        /// <summary>What the visitor does in a family.</summary>
        public static VisitorBehaviour VisitorBehaviourOf(ScenarioFamily family)
        {
            switch (family)
            {
                case ScenarioFamily.ReachLandmark:
                case ScenarioFamily.Patrol: return VisitorBehaviour.Wander;
                case ScenarioFamily.FollowVisitor:
                case ScenarioFamily.PaceMatch: return VisitorBehaviour.Path;
                case ScenarioFamily.KeepDistance: return VisitorBehaviour.Approach;
                default: return VisitorBehaviour.Idle;
            }
        }

        /// <summary>The family ends the episode on success (greet_visitor only).</summary>
        public static bool EndsOnSuccess(ScenarioFamily family) => family == ScenarioFamily.GreetVisitor;

        /// <summary>The distance whose decrease the progress shaping rewards (0 if none); initialises <see cref="RewardMemory.PrevDist"/>.</summary>
        public static double ShapingDistance(AvatarTask task, in RewardFrame f, in RewardMemory memory)
        {
            switch (task.Family)
            {
                case ScenarioFamily.ReachLandmark:
                    return DistanceToLandmark(f.X, f.Z, (int)task.Params[0]);
                case ScenarioFamily.GreetVisitor:
                    return Math.Abs(f.VisitorDistance - task.Params[1]);
                case ScenarioFamily.Patrol:
                    return DistanceToLandmark(f.X, f.Z, PatrolLandmark(task, memory.Slot));
                default:
                    return 0.0;
            }
        }

        /// <summary>
        /// Reward of one decision; updates <paramref name="memory"/>; <paramref name="onTarget"/>
        /// counts toward the success label, <paramref name="success"/> ends the episode (greet).
        /// </summary>
        public static double Reward(AvatarTask task, in RewardFrame f, ref RewardMemory memory, out bool onTarget, out bool success)
        {
            success = false;
            switch (task.Family)
            {
                case ScenarioFamily.ReachLandmark:
                {
                    double dist = DistanceToLandmark(f.X, f.Z, (int)task.Params[0]);
                    onTarget = dist <= ArriveRadius;
                    double reward = ProgressPerM * (memory.PrevDist - dist) + 0.5 * (onTarget ? 1 : 0) - TimeCost;
                    memory.PrevDist = dist;
                    return reward;
                }
                case ScenarioFamily.FollowVisitor:
                {
                    double dist = f.VisitorDistance;
                    double error = Math.Abs(dist - task.Params[0]);
                    onTarget = error <= 0.5;
                    return Math.Exp(-2.0 * error) - 0.5 * (dist < 0.5 ? 1 : 0);
                }
                case ScenarioFamily.GreetVisitor:
                {
                    double preferred = task.Params[0], comfort = task.Params[1];
                    double dist = f.VisitorDistance;
                    double error = Math.Abs(dist - comfort);
                    bool inBand = error <= 0.4;
                    bool attempt = f.Gesture > 0 && !memory.Greeted && dist <= comfort + 1.0;
                    success = attempt && inBand && f.Gesture == (int)preferred;
                    double greeting = success ? 1.0 : (attempt ? -0.5 : 0.0);
                    double reward = ProgressPerM * (memory.PrevDist - error) - TimeCost
                        - 0.2 * (dist < comfort - 0.5 ? 1 : 0) + greeting;
                    memory.PrevDist = error;
                    memory.Greeted |= attempt;
                    onTarget = inBand;
                    return reward;
                }
                case ScenarioFamily.KeepDistance:
                {
                    double low = task.Params[0], width = task.Params[1];
                    double dist = f.VisitorDistance;
                    double violation = Math.Max(low - dist, 0.0) + Math.Max(dist - (low + width), 0.0);
                    onTarget = violation <= 0.0;
                    return onTarget ? 1.0 : -Math.Min(0.5 * violation, 1.0);
                }
                case ScenarioFamily.PaceMatch:
                {
                    double sign = task.Params[0] >= 0.5 ? 1.0 : -1.0;
                    // The visitor's right is (forward.z, -forward.x).
                    double tx = f.VisitorX + f.VisitorForwardZ * sign * task.Params[1];
                    double tz = f.VisitorZ - f.VisitorForwardX * sign * task.Params[1];
                    double posError = Hypot(f.X - tx, f.Z - tz);
                    double velError = Hypot(f.VelX - f.VisitorVelX, f.VelZ - f.VisitorVelZ);
                    onTarget = posError <= 0.5;
                    return 0.8 * Math.Exp(-posError / 0.5) + 0.2 * Math.Exp(-velError / 0.5);
                }
                case ScenarioFamily.Patrol:
                {
                    double dist = DistanceToLandmark(f.X, f.Z, PatrolLandmark(task, memory.Slot));
                    double distAfter = DistanceToLandmark(f.X, f.Z, PatrolLandmark(task, memory.Slot + 1));
                    bool reached = dist <= ArriveRadius;
                    bool wrongWay = distAfter <= ArriveRadius;
                    double reward = ProgressPerM * (memory.PrevDist - dist) + (reached ? 1.0 : 0.0)
                        - (wrongWay ? 1.0 : 0.0) - TimeCost;
                    memory.PrevDist = reached ? distAfter : dist;
                    if (reached) memory.Slot += 1;
                    onTarget = reached;
                    return reward;
                }
                default:
                    throw new ArgumentOutOfRangeException(nameof(task));
            }
        }

        /// <summary>Success label of a finished episode (for the Stats channel).</summary>
        public static bool EpisodeSuccess(ScenarioFamily family, int onTargetSteps, int length, bool lastOnTarget, int patrolSlot, bool completed)
        {
            switch (family)
            {
                case ScenarioFamily.ReachLandmark: return lastOnTarget;
                case ScenarioFamily.GreetVisitor: return completed;
                case ScenarioFamily.Patrol: return patrolSlot >= 2;
                default: return onTargetSteps >= length / 2.0;
            }
        }

        /// <summary>Landmark index of patrol slot <paramref name="slot"/> (mod 3) of the task's route.</summary>
        public static int PatrolLandmark(AvatarTask task, int slot) => AvatarContract.PatrolRoutes[(int)task.Params[0], slot % 3];

        private static double DistanceToLandmark(double x, double z, int landmark) =>
            Hypot(x - PlazaMath.Landmarks[landmark, 0], z - PlazaMath.Landmarks[landmark, 1]);

        private static double Hypot(double a, double b) => Math.Sqrt(a * a + b * b);
    }

    /// <summary>What the scripted visitor does (python: visitor.BEHAVIOUR_NAMES order).</summary>
    public enum VisitorBehaviour
    {
        /// <summary>Stands still.</summary>
        Idle = 0,
        /// <summary>Walks to random goals.</summary>
        Wander = 1,
        /// <summary>Walks a rectangular loop.</summary>
        Path = 2,
        /// <summary>Walks toward the nearest avatar, stopping short of it.</summary>
        Approach = 3,
    }
}
