using System;

namespace AvatarMeta
{
    /// <summary>
    /// Plaza geometry in plain doubles, mirroring python/avatar_meta/world/geometry.py so that the
    /// Unity avatar and the headless world compute identical observations.
    /// </summary>
    /// <remarks>
    /// Conventions (Unity's XZ plane): a heading (yaw, radians) of 0 faces +z; positive yaw turns
    /// toward +x (clockwise seen from above, like <c>Quaternion.Euler(0, yaw, 0)</c>). Forward of
    /// heading h is (sin h, cos h), right is (cos h, -sin h). The local frame is
    /// (lateral = right, forward). Positions are area-local: the area's origin is the plaza centre.
    /// No UnityEngine types, no allocations.
    /// </remarks>
    public static class PlazaMath
    {
        /// <summary>Walls are at x = ±HalfSize and z = ±HalfSize.</summary>
        public static readonly double HalfSize = Exact(AvatarContract.PlazaSize) / 2.0;

        /// <summary>Seconds between two decisions, as the double the Python world uses (0.1, not 0.1f).</summary>
        public static readonly double DecisionDt = Exact(AvatarContract.DecisionDt);

        /// <summary>Radius of every body (avatars, visitor), metres.</summary>
        public static readonly double AvatarRadius = Exact(AvatarContract.AvatarRadius);

        /// <summary>(x, z, radius) per obstacle, as doubles.</summary>
        public static readonly double[,] Obstacles = ExactMatrix(AvatarContract.Obstacles);

        /// <summary>(x, z) per landmark, as doubles.</summary>
        public static readonly double[,] Landmarks = ExactMatrix(AvatarContract.Landmarks);

        /// <summary>Metres from a landmark's centre within which an avatar touches it.</summary>
        public static readonly double LandmarkTouchRadius = Exact(AvatarContract.LandmarkTouchRadius);

        /// <summary>
        /// The double a contract constant stands for. The generated contract stores floats
        /// (0.1f = 0.100000001490116...), the Python world uses the decimal literal as a double
        /// (0.1); going through decimal (7 significant digits) recovers the literal exactly, so
        /// both sides integrate identical numbers.
        /// </summary>
        public static double Exact(float value) => (double)(decimal)value;

        private static double[,] ExactMatrix(float[,] values)
        {
            var result = new double[values.GetLength(0), values.GetLength(1)];
            for (int i = 0; i < values.GetLength(0); i++)
                for (int j = 0; j < values.GetLength(1); j++) result[i, j] = Exact(values[i, j]);
            return result;
        }

        /// <summary>Rotates a world vector (x, z) into the local frame of <paramref name="heading"/>.</summary>
        public static void ToLocal(double x, double z, double heading, out double lateral, out double forward)
        {
            double c = Math.Cos(heading), s = Math.Sin(heading);
            lateral = x * c - z * s;
            forward = x * s + z * c;
        }

        /// <summary>Unit forward vector of a heading.</summary>
        public static void ForwardOf(double heading, out double x, out double z)
        {
            x = Math.Sin(heading);
            z = Math.Cos(heading);
        }

        /// <summary>The heading that faces along (x, z); inverse of <see cref="ForwardOf"/>.</summary>
        public static double YawOf(double x, double z) => Math.Atan2(x, z);

        /// <summary>Wraps an angle to [-pi, pi).</summary>
        public static double WrapAngle(double angle)
        {
            double twoPi = 2.0 * Math.PI;
            double wrapped = (angle + Math.PI) % twoPi;
            if (wrapped < 0) wrapped += twoPi;
            return wrapped - Math.PI;
        }

        /// <summary>
        /// Distance (metres, from the body's centre) along ray <paramref name="ray"/> to the nearest
        /// wall or obstacle, capped at <see cref="AvatarContract.RayLength"/>. Ray 0 looks forward
        /// and the rays go counter-clockwise seen from above (ray 2 left, 4 back, 6 right).
        /// Rays see only the static scene (walls, obstacles), not people.
        /// </summary>
        public static double CastRay(double x, double z, double heading, int ray)
        {
            double length = AvatarContract.RayLength;
            double theta = ray * (2.0 * Math.PI / AvatarContract.NumRays);
            // Local direction of the ray: (lateral, forward) = (-sin theta, cos theta).
            double uLat = -Math.Sin(theta), uFwd = Math.Cos(theta);
            // World direction: heading turned left by theta.
            double dx = Math.Sin(heading - theta), dz = Math.Cos(heading - theta);

            double best = length;
            best = Math.Min(best, WallHit(HalfSize - x, dx));
            best = Math.Min(best, WallHit(HalfSize + x, -dx));
            best = Math.Min(best, WallHit(HalfSize - z, dz));
            best = Math.Min(best, WallHit(HalfSize + z, -dz));

            var obstacles = Obstacles;
            for (int o = 0; o < obstacles.GetLength(0); o++)
            {
                ToLocal(obstacles[o, 0] - x, obstacles[o, 1] - z, heading, out double qLat, out double qFwd);
                double r = obstacles[o, 2];
                double b = qLat * uLat + qFwd * uFwd;
                double c = qLat * qLat + qFwd * qFwd - r * r;
                double sqrtC = Math.Sqrt(c);
                if (b >= sqrtC)
                {
                    double t = b - Math.Sqrt(Math.Max(b * b - c, 0.0));
                    if (t < best) best = t;
                }
            }
            return best;
        }

        private static double WallHit(double gap, double toward) => gap / Math.Max(toward, 1e-12);

        /// <summary>
        /// The landmark an avatar at (<paramref name="x"/>, <paramref name="z"/>) touches (the
        /// nearest, within <see cref="LandmarkTouchRadius"/>), else <paramref name="previous"/>:
        /// the observation's last_landmark, as Plaza._touch_landmarks keeps it.
        /// </summary>
        public static int TouchedLandmark(double x, double z, int previous)
        {
            var landmarks = Landmarks;
            int nearest = 0;
            double best = double.PositiveInfinity;
            for (int l = 0; l < landmarks.GetLength(0); l++)
            {
                double dx = x - landmarks[l, 0], dz = z - landmarks[l, 1];
                double dist = Math.Sqrt(dx * dx + dz * dz);
                if (dist < best) { best = dist; nearest = l; }
            }
            return best <= LandmarkTouchRadius ? nearest : previous;
        }

        /// <summary>
        /// Resolves a disc of <paramref name="radius"/> against obstacles (pushed out radially,
        /// keeping the tangential motion) and walls (clamped), as geometry.push_out does.
        /// </summary>
        public static void PushOut(ref double x, ref double z, double radius)
        {
            var obstacles = Obstacles;
            double pushX = 0.0, pushZ = 0.0;
            for (int o = 0; o < obstacles.GetLength(0); o++)
            {
                double ax = x - obstacles[o, 0], az = z - obstacles[o, 1];
                double dist = Math.Sqrt(ax * ax + az * az);
                double reach = obstacles[o, 2] + radius;
                if (dist < reach)
                {
                    double excess = Math.Max(reach / Math.Max(dist, 1e-9) - 1.0, 0.0);
                    pushX += ax * excess;
                    pushZ += az * excess;
                }
            }
            x += pushX;
            z += pushZ;
            double limit = HalfSize - radius;
            x = Math.Min(Math.Max(x, -limit), limit);
            z = Math.Min(Math.Max(z, -limit), limit);
        }
    }

    /// <summary>The state the observation of one avatar is computed from (area-local, SI units).</summary>
    public struct AvatarObservationInput
    {
        /// <summary>Avatar position x, z (metres) and heading (yaw, radians).</summary>
        public double X, Z, Heading;
        /// <summary>Avatar velocity actually achieved (m/s, world frame).</summary>
        public double VelX, VelZ;
        /// <summary>The body's top forward speed (m/s).</summary>
        public double TopSpeed;
        /// <summary>Visitor position (metres) and velocity (m/s), world frame.</summary>
        public double VisitorX, VisitorZ, VisitorVelX, VisitorVelZ;
        /// <summary>The gesture the visitor shows now (0 = none).</summary>
        public int VisitorGesture;
        /// <summary>The avatar's last gesture (0 = none).</summary>
        public int LastGesture;
        /// <summary>Decisions taken so far in this episode.</summary>
        public int StepsTaken;
        /// <summary>The landmark touched last this episode (<see cref="PlazaMath.TouchedLandmark"/>), -1 before any.</summary>
        public int LastLandmark;
    }

    /// <summary>Writes observation vector v2 in the contract order (python world: Plaza._observe).</summary>
    public static class AvatarObservations
    {
        /// <summary>The visitor's velocity is divided by this (m/s).</summary>
        public const double VisitorVelocityScale = 2.0;

        /// <summary>time_left for a number of decisions taken: 1 at the first decision, 0 at the last.</summary>
        public static float TimeLeft(int stepsTaken)
        {
            double v = 1.0 - stepsTaken / (double)(AvatarContract.MaxEpisodeSteps - 1);
            return (float)Math.Max(v, 0.0);
        }

        /// <summary>Fills <paramref name="obs"/>[0..ObservationSize) from <paramref name="s"/>. Allocation-free.</summary>
        public static void Write(in AvatarObservationInput s, float[] obs)
        {
            if (obs == null || obs.Length < AvatarContract.ObservationSize) throw new ArgumentException("observation buffer too short", nameof(obs));
            double scale = AvatarContract.PositionScale;
            double lat, fwd;

            obs[AvatarContract.ObsOwnPositionOffset] = (float)(s.X / scale);
            obs[AvatarContract.ObsOwnPositionOffset + 1] = (float)(s.Z / scale);

            PlazaMath.ToLocal(s.VelX / s.TopSpeed, s.VelZ / s.TopSpeed, s.Heading, out lat, out fwd);
            obs[AvatarContract.ObsOwnVelocityOffset] = (float)lat;
            obs[AvatarContract.ObsOwnVelocityOffset + 1] = (float)fwd;

            double toX = s.VisitorX - s.X, toZ = s.VisitorZ - s.Z;
            PlazaMath.ToLocal(toX / scale, toZ / scale, s.Heading, out lat, out fwd);
            obs[AvatarContract.ObsVisitorPositionOffset] = (float)lat;
            obs[AvatarContract.ObsVisitorPositionOffset + 1] = (float)fwd;
            obs[AvatarContract.ObsVisitorDistanceOffset] = (float)(Math.Sqrt(toX * toX + toZ * toZ) / scale);

            PlazaMath.ToLocal(s.VisitorVelX / VisitorVelocityScale, s.VisitorVelZ / VisitorVelocityScale, s.Heading, out lat, out fwd);
            obs[AvatarContract.ObsVisitorVelocityOffset] = (float)lat;
            obs[AvatarContract.ObsVisitorVelocityOffset + 1] = (float)fwd;

            WriteOneHot(obs, AvatarContract.ObsVisitorGestureOffset, AvatarContract.ObsVisitorGestureSize, s.VisitorGesture);

            var landmarks = PlazaMath.Landmarks;
            for (int l = 0; l < landmarks.GetLength(0); l++)
            {
                PlazaMath.ToLocal((landmarks[l, 0] - s.X) / scale, (landmarks[l, 1] - s.Z) / scale, s.Heading, out lat, out fwd);
                obs[AvatarContract.ObsLandmarksOffset + 2 * l] = (float)lat;
                obs[AvatarContract.ObsLandmarksOffset + 2 * l + 1] = (float)fwd;
            }

            for (int r = 0; r < AvatarContract.NumRays; r++)
                obs[AvatarContract.ObsRaysOffset + r] = (float)(PlazaMath.CastRay(s.X, s.Z, s.Heading, r) / AvatarContract.RayLength);

            WriteOneHot(obs, AvatarContract.ObsOwnGestureOffset, AvatarContract.ObsOwnGestureSize, s.LastGesture);
            obs[AvatarContract.ObsTimeLeftOffset] = TimeLeft(s.StepsTaken);
            WriteOneHot(obs, AvatarContract.ObsLastLandmarkOffset, AvatarContract.ObsLastLandmarkSize, s.LastLandmark);
        }

        /// <summary>Mask rule v1 (contract.gesture_allowed): gestures other than None need |speed| &lt;= half the top speed.</summary>
        public static bool GesturesAllowed(double forwardSpeed, double topSpeed)
        {
            // A hair over the threshold, as the python world does, so full-command backwards walking
            // (exactly half the top speed) is not flipped by rounding.
            return Math.Abs(forwardSpeed) <= topSpeed * AvatarContract.GestureMaskSpeedFraction + 1e-9;
        }

        private static void WriteOneHot(float[] obs, int offset, int size, int index)
        {
            for (int i = 0; i < size; i++) obs[offset + i] = i == index ? 1f : 0f;
        }
    }
}
