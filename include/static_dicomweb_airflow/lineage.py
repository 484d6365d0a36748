"""Lineage per task: what OpenLineage says each task read and wrote.

Tasks report what they read and wrote to Airflow's hook-lineage collector
(:func:`static_dicomweb_airflow.runtime.report_lineage`).  Two things make the events
say exactly that:

- :func:`on_task_instance_running`, an Airflow listener (registered by
  ``plugins/static_dicomweb_plugin.py``), starts each task with an empty collector.
  Airflow keeps one collector per process; under an executor each task has a process of
  its own, but under ``airflow dags test`` (``make demo``, the DAG tests) all tasks share
  one, and each event listed what the tasks before it had read and wrote.  ``tryfirst``:
  it runs before OpenLineage's listener emits the task's START event.
- :func:`outlets_as_outputs` lists a task's outlet Assets (``publish``'s
  ``dicomweb_site``) as its outputs: OpenLineage translates only Assets of schemes a
  provider knows (``s3``, ``file``), not ``static-dicomweb://``.

Importing this module imports no more than Airflow's listener marker (DAG files use it).
"""

from __future__ import annotations

from typing import Any

from airflow.listeners import hookimpl


@hookimpl(tryfirst=True)
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """Forget what earlier tasks in this process reported (a fresh collector, as in a new process)."""
    from airflow.sdk.lineage import get_hook_lineage_collector

    get_hook_lineage_collector.cache_clear()


def outlets_as_outputs(operator: Any) -> None:
    """Make OpenLineage list ``operator``'s outlet Assets as its outputs when it succeeds.

    Each Asset becomes a dataset named after the Asset in the namespace of its URI
    (``static-dicomweb://site``, ``dicomweb_site``).  OpenLineage calls these methods on the
    task (its default extractor); a failed task reports no outputs.
    """

    def on_complete(task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset

        return OperatorLineage(outputs=[Dataset(namespace=asset.uri.rstrip("/"), name=asset.name)
                                        for asset in operator.outlets])

    def on_failure(task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        return OperatorLineage()

    operator.get_openlineage_facets_on_complete = on_complete
    operator.get_openlineage_facets_on_failure = on_failure
