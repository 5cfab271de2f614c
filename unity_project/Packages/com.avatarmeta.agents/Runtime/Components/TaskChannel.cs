using System;
using Unity.MLAgents.SideChannels;
using UnityEngine;

namespace AvatarMeta
{
    /// <summary>
    /// Receives per-area task assignments from the trainer (GUID
    /// <see cref="AvatarContract.TaskChannelId"/>; payload layout in <see cref="TaskMessage"/>).
    /// An assignment takes effect at the area's next episode start and sticks until replaced.
    /// Bad records are logged and ignored: a trainer can never crash the scene.
    /// </summary>
    public sealed class TaskChannel : SideChannel
    {
        private readonly AvatarEnvironment _environment;

        /// <summary>Creates the channel for <paramref name="environment"/>'s areas.</summary>
        public TaskChannel(AvatarEnvironment environment)
        {
            ChannelId = new Guid(AvatarContract.TaskChannelId);
            _environment = environment;
        }

        /// <inheritdoc/>
        protected override void OnMessageReceived(IncomingMessage msg)
        {
            TaskMessage message;
            AvatarTask task;
            try
            {
                message = TaskMessage.Decode(msg.GetRawBytes());
                task = message.ToTask();
            }
            catch (FormatException err)
            {
                Debug.LogWarning("TaskChannel: malformed record (" + err.Message + "); ignored");
                return;
            }
            catch (ArgumentException err)
            {
                Debug.LogWarning("TaskChannel: invalid task (" + err.Message + "); ignored");
                return;
            }
            var areas = _environment.Areas;
            if (message.Area == -1)
            {
                for (int i = 0; i < areas.Count; i++) areas[i].AssignTask(task);
                return;
            }
            var area = _environment.FindArea(message.Area);
            if (area == null)
            {
                Debug.LogWarning("TaskChannel: area " + message.Area + " does not exist (this scene has " + areas.Count + " areas, or -1 for all); ignored");
                return;
            }
            area.AssignTask(task);
        }
    }
}
