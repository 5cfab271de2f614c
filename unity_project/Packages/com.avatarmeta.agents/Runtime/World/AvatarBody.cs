using System;

namespace AvatarMeta
{
    /// <summary>
    /// The avatar's planar unicycle body, mirroring the headless world (Plaza._move_everyone):
    /// noisy commands are clipped to [-1, 1]; the heading turns first (turn × turn rate × dt,
    /// positive = clockwise seen from above), then the body walks along the new heading
    /// (forward × top speed × dt; backwards at most at half the top speed), then collisions push it
    /// out of obstacles and walls. Pure C#, allocation-free.
    /// </summary>
    public struct AvatarBody
    {
        /// <summary>A backwards command walks at most at this fraction of the top speed.</summary>
        public const double BackwardSpeedFraction = 0.5;

        /// <summary>Area-local position (metres) and heading (yaw, radians, not wrapped).</summary>
        public double X, Z, Heading;
        /// <summary>Velocity actually achieved over the last decision (m/s, world frame).</summary>
        public double VelX, VelZ;
        /// <summary>Signed forward component of the velocity (m/s).</summary>
        public double Speed;
        /// <summary>Slow enough to gesture (the mask rule).</summary>
        public bool Slow;

        /// <summary>A body at rest at (x, z) facing <paramref name="heading"/>.</summary>
        public static AvatarBody AtRest(double x, double z, double heading) =>
            new AvatarBody { X = x, Z = z, Heading = heading, Slow = true };

        /// <summary>
        /// One decision. <paramref name="forwardNoise"/>/<paramref name="turnNoise"/> are the noise
        /// samples already multiplied by the body's actuation noise (0 for none).
        /// </summary>
        public void Step(double forwardCommand, double turnCommand, double forwardNoise, double turnNoise, double topSpeed, double turnRate)
        {
            double forward = Clamp(forwardCommand + forwardNoise);
            double turn = Clamp(turnCommand + turnNoise);
            double stepLength = Math.Max(forward, BackwardSpeedFraction * forward) * (topSpeed * PlazaMath.DecisionDt);
            Heading += turn * (turnRate * PlazaMath.DecisionDt);
            PlazaMath.ForwardOf(Heading, out double fx, out double fz);
            double x = X + fx * stepLength, z = Z + fz * stepLength;
            PlazaMath.PushOut(ref x, ref z, PlazaMath.AvatarRadius);
            VelX = (x - X) * (1.0 / PlazaMath.DecisionDt);
            VelZ = (z - Z) * (1.0 / PlazaMath.DecisionDt);
            X = x; Z = z;
            PlazaMath.ToLocal(VelX, VelZ, Heading, out _, out Speed);
            Slow = AvatarObservations.GesturesAllowed(Speed, topSpeed);
        }

        private static double Clamp(double value) => value < -1.0 ? -1.0 : (value > 1.0 ? 1.0 : value);
    }
}
