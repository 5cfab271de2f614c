using System;

namespace AvatarMeta
{
    /// <summary>
    /// The scripted visitor of one area (the person the avatars react to), following the rules of
    /// python/avatar_meta/world/visitor.py: idle, wander between random goals, walk a rectangular
    /// loop, or approach the nearest avatar; a gesture cue now and then. Pure C#, allocation-free
    /// per decision; its random stream is its own (System.Random), so trajectories are not
    /// bit-identical to the headless world's, only statistically alike.
    /// </summary>
    public sealed class ScriptedVisitor
    {
        /// <summary>A goal counts as reached within this distance, metres.</summary>
        public const double ArriveRadius = 0.3;
        /// <summary>An approaching visitor stops this far from the avatar, metres.</summary>
        public const double ApproachStop = 0.6;
        /// <summary>Wander goals are drawn in [-extent, extent]².</summary>
        public const double WanderExtent = 8.0;
        /// <summary>Decisions after which a wanderer gives up a goal.</summary>
        public const int WanderPatience = 80;
        /// <summary>Chance per decision that a gesture cue starts.</summary>
        public const double CueStartProbability = 0.02;
        /// <summary>Decisions a cue is held.</summary>
        public const int CueSteps = 10;

        private readonly Random _random;
        private readonly double[] _cornersX = new double[4];
        private readonly double[] _cornersZ = new double[4];
        private int _waypoint;
        private int _patience;
        private int _cueLeft;
        private double _goalX, _goalZ, _stepLength, _headingX, _headingZ;

        /// <summary>Position, velocity and facing (unit vector), area-local.</summary>
        public double X, Z, VelX, VelZ, ForwardX, ForwardZ = 1.0;
        /// <summary>Gesture shown now (0 = none).</summary>
        public int Cue { get; private set; }
        /// <summary>Current behaviour.</summary>
        public VisitorBehaviour Behaviour { get; private set; }
        /// <summary>Walking speed, m/s.</summary>
        public double Speed { get; private set; }

        /// <summary>Creates a visitor with its own random stream.</summary>
        public ScriptedVisitor(int seed) { _random = new Random(seed); }

        /// <summary>Places the visitor for a new episode.</summary>
        public void Start(VisitorBehaviour behaviour, double speed)
        {
            Behaviour = behaviour;
            Speed = behaviour == VisitorBehaviour.Idle ? 0.0 : speed;
            VelX = VelZ = 0.0;
            _patience = 0;
            _cueLeft = 0;
            Cue = 0;
            RandomFreePoint(6.5, 1.0, out X, out Z);
            PlazaMath.ForwardOf(Uniform(-Math.PI, Math.PI), out ForwardX, out ForwardZ);
            _goalX = X; _goalZ = Z;
            if (behaviour == VisitorBehaviour.Wander) RandomFreePoint(WanderExtent, 0.8, out _goalX, out _goalZ);
            if (behaviour == VisitorBehaviour.Path)
            {
                double half = Uniform(6.8, 7.5);
                int step = _random.NextDouble() < 0.5 ? 1 : -1;
                int first = _random.Next(4);
                for (int i = 0; i < 4; i++)
                {
                    int corner = ((first + step * i) % 4 + 4) % 4;
                    _cornersX[i] = half * (corner == 0 || corner == 3 ? -1 : 1);
                    _cornersZ[i] = half * (corner < 2 ? -1 : 1);
                }
                double along = _random.NextDouble();
                X = _cornersX[0] + along * (_cornersX[1] - _cornersX[0]);
                Z = _cornersZ[0] + along * (_cornersZ[1] - _cornersZ[0]);
                double len = Math.Sqrt(Sq(_cornersX[1] - _cornersX[0]) + Sq(_cornersZ[1] - _cornersZ[0]));
                ForwardX = (_cornersX[1] - _cornersX[0]) / len;
                ForwardZ = (_cornersZ[1] - _cornersZ[0]) / len;
                _waypoint = 1;
                _goalX = _cornersX[1]; _goalZ = _cornersZ[1];
            }
        }

        /// <summary>
        /// Chooses this decision's goal and cue and returns where the visitor walks to (before
        /// collisions); <paramref name="avatarX"/>/<paramref name="avatarZ"/> is the nearest avatar.
        /// Call <see cref="Settle"/> with the collision-free position afterwards.
        /// </summary>
        public void Plan(double avatarX, double avatarZ, out double toX, out double toZ)
        {
            bool arrived = Math.Sqrt(Sq(_goalX - X) + Sq(_goalZ - Z)) <= ArriveRadius;
            switch (Behaviour)
            {
                case VisitorBehaviour.Wander:
                    _patience++;
                    if (arrived || _patience >= WanderPatience)
                    {
                        RandomFreePoint(WanderExtent, 0.8, out _goalX, out _goalZ);
                        _patience = 0;
                    }
                    break;
                case VisitorBehaviour.Path:
                    if (arrived)
                    {
                        _waypoint = (_waypoint + 1) % 4;
                        _goalX = _cornersX[_waypoint]; _goalZ = _cornersZ[_waypoint];
                    }
                    break;
                case VisitorBehaviour.Approach:
                    _goalX = avatarX; _goalZ = avatarZ;
                    break;
            }
            AdvanceCue();
            double dx = _goalX - X, dz = _goalZ - Z;
            double dist = Math.Sqrt(dx * dx + dz * dz);
            double stop = Behaviour == VisitorBehaviour.Approach ? ApproachStop : 0.0;
            _stepLength = Math.Min(Speed * PlazaMath.DecisionDt, Math.Max(dist - stop, 0.0));
            double inv = 1.0 / Math.Max(dist, 1e-9);
            _headingX = dx * inv; _headingZ = dz * inv;
            toX = X + _headingX * _stepLength;
            toZ = Z + _headingZ * _stepLength;
        }

        /// <summary>Takes the collision-free position; derives velocity and facing.</summary>
        public void Settle(double x, double z)
        {
            VelX = (x - X) / PlazaMath.DecisionDt;
            VelZ = (z - Z) / PlazaMath.DecisionDt;
            if (_stepLength > 1e-6) { ForwardX = _headingX; ForwardZ = _headingZ; }
            X = x; Z = z;
        }

        private void AdvanceCue()
        {
            double u = _random.NextDouble();
            if (u < CueStartProbability)
            {
                int kinds = AvatarContract.DiscreteBranches[0] - 1;
                Cue = 1 + Math.Min((int)(u / CueStartProbability * kinds), kinds - 1);
                _cueLeft = CueSteps;
            }
            if (_cueLeft > 0) _cueLeft--;
            else Cue = 0;
        }

        private void RandomFreePoint(double extent, double clearance, out double x, out double z)
        {
            x = Uniform(-extent, extent);
            z = Uniform(-extent, extent);
            PlazaMath.PushOut(ref x, ref z, clearance);
        }

        private double Uniform(double low, double high) => low + _random.NextDouble() * (high - low);

        private static double Sq(double v) => v * v;
    }
}
