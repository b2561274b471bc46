"""Multi-worker runs on Ray: data-parallel policy replicas, and generation/reward workers as actors.

:class:`~rlvr.distributed.policy_group.RayPolicyGroup` has :class:`~rlvr.policy.hf.HFPolicy`'s interface;
:class:`~rlvr.distributed.actors.RayGenerationWorker` and :class:`~rlvr.distributed.actors.RayRewardWorker`
wrap the HF generation backend and the reward scorer. Import them from their modules: this package stays light
(no ray, torch or transformers import).
"""
