"""A small fake Kubernetes API server over real HTTP, for tests and demos.

``EmulatedCluster`` serves apps/v1 Deployments, StatefulSets and DaemonSets
(GET, LIST, WATCH, PATCH incl. strategic merge, ``dryRun=All`` and
``resourceVersion`` conflicts), their pods, ReplicaSets and ControllerRevisions,
and runs a simulated controller that rolls pods toward the new template one
step per tick. Image tag suffixes pick the behaviour of new pods:

==================  ==========================================================
``-crashloop``      containers in ``CrashLoopBackOff``, restartCount rising,
                    ``lastState.terminated`` (exit code 1, ``Error``)
``-imagepull``      ``ErrImagePull`` / ``ImagePullBackOff``
``-never-ready``    running, never ready
``-unschedulable``  pod ``Pending``, ``PodScheduled=False`` ``Unschedulable``,
                    no ``spec.nodeName``, no ``containerStatuses``
``-slow``           becomes ready, but the workload moves 10x slower
anything else       becomes ready on the next tick
==================  ==========================================================

Simulated application traffic (:mod:`convoy.emulator.metrics`): ``GET /metrics``
answers Prometheus text exposition with, per running pod,
``http_requests_total{namespace,workload,pod,image,code}`` (about 20 requests
per second from the moment the pod became ready, deterministic in elapsed
time; ``code`` ``"200"``/``"500"``) and the histogram
``http_request_duration_seconds_bucket{namespace,workload,pod,image,le}`` with
``_sum``/``_count``. A tag containing ``-errors`` answers 20 % of requests with
``500``; ``-latency`` makes p99 about 2 s instead of about 50 ms. Both markers
leave readiness alone and combine with the suffixes above.

Canary primitives: a Deployment with ``spec.paused`` creates and deletes no
pods (Progressing ``Unknown``/``DeploymentPaused``, no progress deadline); a
StatefulSet updates only ordinals at or above
``spec.updateStrategy.rollingUpdate.partition``, highest first; scaled
meanwhile, it creates ordinals below the partition at the current revision and
the others at the update revision, and removes the highest ordinals first.
``kubectl`` works against it (tests/integration/emulator/test_kubectl_conformance.py):
``get`` receives server-side ``meta.k8s.io/v1`` Tables
(:mod:`convoy.emulator.tables`), ``rollout status/pause/resume/undo/history``
and ``set image --dry-run=server`` behave as on a cluster.

Faults and authorization: :meth:`EmulatedCluster.inject_conflicts`,
:meth:`EmulatedCluster.inject_errors`, :meth:`EmulatedCluster.forbid` (one
resource or one object, at once or after some requests). Every request is
logged in :attr:`EmulatedCluster.requests`.
"""

from convoy.emulator.cluster import EmulatedCluster, RequestRecord, previous_image
from convoy.emulator.store import behaviour

__all__ = ["EmulatedCluster", "RequestRecord", "behaviour", "previous_image"]
