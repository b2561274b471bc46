"""Multi-worker runs on Ray: data-parallel policy replicas, and the generation worker as an actor.

:class:`~rlvr.distributed.policy_group.RayPolicyGroup` implements :class:`~rlvr.policy.base.Policy`;
:class:`~rlvr.distributed.actors.RayGenerationWorker` wraps the HF generation backend. Import them from their
modules: this package stays light (no ray, torch or transformers import).
"""
