"""Example models for closedloop: each is a config, dbt models, suites and, if it needs one, a source.

Nothing under `training/`, `plugins/` or `dags/` imports an example; a config reaches its example's
code through `contract.source.entry_point`, the way any custom source is reached.
"""
