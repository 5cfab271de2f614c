using System;
using System.Collections.Generic;
using Unity.MLAgents.SideChannels;
using UnityEngine;

namespace AvatarMeta
{
    /// <summary>
    /// Scene-wide avatar-meta setup: owns the TaskChannel and PolicyChannel (registered in
    /// <c>OnEnable</c>, unregistered in <c>OnDisable</c>), the trusted policy public key, and the
    /// registry of <see cref="AvatarArea"/>s. Put exactly one in a scene.
    /// </summary>
    [DisallowMultipleComponent]
    [DefaultExecutionOrder(-100)]
    [AddComponentMenu("avatar-meta/Avatar Environment")]
    public sealed class AvatarEnvironment : MonoBehaviour
    {
        [Tooltip("PEM public key (SubjectPublicKeyInfo, 'keys/public.pem' from `avatar-meta keygen`). Without it every streamed policy is refused.")]
        [SerializeField] private TextAsset policyPublicKey;

        [Tooltip("Optional signed PolicyWeights envelope (`exported/AvatarAgent.weights.bin`, renamed to .bytes) that areas in Adapted mode start with.")]
        [SerializeField] private TextAsset initialPolicy;

        [Tooltip("Set Time.fixedDeltaTime to the contract's decision interval (0.1 s) so one Academy step is one decision.")]
        [SerializeField] private bool useContractTimestep = true;

        private static AvatarEnvironment s_Active;
        private readonly List<AvatarArea> _areas = new List<AvatarArea>();
        private TaskChannel _taskChannel;
        private PolicyChannel _policyChannel;
        private PolicyPublicKey _trustedKey;
        private PolicyNetwork _initialNetwork;

        /// <summary>The enabled environment of the scene, or null.</summary>
        public static AvatarEnvironment Active => s_Active;

        /// <summary>Registered areas, in registration order.</summary>
        public IReadOnlyList<AvatarArea> Areas => _areas;

        /// <summary>The key policies must be signed with (null: every policy is refused).</summary>
        public PolicyPublicKey TrustedKey => _trustedKey;

        /// <summary>The trusted key's PEM text (null when none is assigned). Components that verify on
        /// background threads build their own <see cref="PolicyPublicKey"/> from it.</summary>
        public string TrustedKeyPem => policyPublicKey != null ? policyPublicKey.text : null;

        /// <summary>The verified initial policy, or null.</summary>
        public PolicyNetwork InitialPolicy => _initialNetwork;

        /// <summary>The area with <paramref name="index"/>, or null.</summary>
        public AvatarArea FindArea(int index)
        {
            for (int i = 0; i < _areas.Count; i++) if (_areas[i].AreaIndex == index) return _areas[i];
            return null;
        }

        private void Awake()
        {
            if (useContractTimestep) Time.fixedDeltaTime = AvatarContract.DecisionDt;
            LoadKeyAndInitialPolicy();
            // Areas may awake before this component; collect those already in the scene.
            foreach (var area in GetComponentsInChildren<AvatarArea>(true)) Register(area);
        }

        private void OnEnable()
        {
            if (s_Active != null && s_Active != this)
            {
                Debug.LogError("avatar-meta: more than one AvatarEnvironment is enabled; '" + name + "' is ignored", this);
                return;
            }
            s_Active = this;
            _taskChannel = new TaskChannel(this);
            _policyChannel = new PolicyChannel(this);
            SideChannelManager.RegisterSideChannel(_taskChannel);
            SideChannelManager.RegisterSideChannel(_policyChannel);
        }

        private void OnDisable()
        {
            if (s_Active != this) return;
            SideChannelManager.UnregisterSideChannel(_taskChannel);
            SideChannelManager.UnregisterSideChannel(_policyChannel);
            _taskChannel = null;
            _policyChannel = null;
            s_Active = null;
        }

        private void OnDestroy()
        {
            _trustedKey?.Dispose();
            _trustedKey = null;
        }

        /// <summary>Adds an area (areas call this from <c>OnEnable</c>); duplicates are ignored.</summary>
        public void Register(AvatarArea area)
        {
            if (area == null || _areas.Contains(area)) return;
            for (int i = 0; i < _areas.Count; i++)
            {
                if (_areas[i].AreaIndex == area.AreaIndex)
                    Debug.LogWarning("avatar-meta: areas '" + _areas[i].name + "' and '" + area.name + "' share index " + area.AreaIndex, area);
            }
            _areas.Add(area);
        }

        /// <summary>Removes an area (areas call this from <c>OnDisable</c>).</summary>
        public void Unregister(AvatarArea area) => _areas.Remove(area);

        private void LoadKeyAndInitialPolicy()
        {
            if (policyPublicKey == null) return;
            try
            {
                _trustedKey = PolicyPublicKey.FromPem(policyPublicKey.text);
            }
            catch (FormatException err)
            {
                Debug.LogError("avatar-meta: policy public key is not a PEM RSA key: " + err.Message, this);
                return;
            }
            if (initialPolicy == null) return;
            try
            {
                _initialNetwork = new PolicyNetwork(SignedPolicyLoader.Open(initialPolicy.bytes, _trustedKey));
            }
            catch (Exception err) when (err is PolicyVerificationException || err is FormatException)
            {
                Debug.LogError("avatar-meta: initial policy refused: " + err.Message, this);
            }
        }
    }
}
