"""Operating state of a policy: ``convoy status`` and ``convoy db`` (docs/operate.md).

- :mod:`convoy.operate.services`: live workloads (one LIST per kind and
  namespace) judged against the policy and ``convoy.dev/images``;
- :mod:`convoy.operate.versions`: Flyway-style version states from migration
  files and each engine's history;
- :mod:`convoy.operate.postgres`, :mod:`convoy.operate.mongo`: read-only
  inspection (versions, lock holder, unfinished checkpoints, kept backups),
  MongoDB baseline, and pruning under the datastore lock;
- :mod:`convoy.operate.retention`: which kept backups may be pruned;
- :mod:`convoy.operate.status`: the whole report and its text;
- :mod:`convoy.operate.cli`: the commands.

No Airflow import: connections come from the functions handed in
:class:`convoy.operate.status.Sources` (Airflow's, from
:mod:`convoy.airflow.connections`, by default).
"""
