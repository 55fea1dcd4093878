"""The DAG's convert task: Beam's operator, but bad input fails it without a retry, no
warning about a Dataflow configuration on the DirectRunner, and no version probe.

When the published version is up to date, `plan_conversion` maps the task once with
`up_to_date=<the reason>`: that instance logs why nothing is converted and is skipped, so
the skipped convert task a user clicks on says why (a task mapped over nothing would be
skipped with "no logs available").

The launcher (`python -m imagenet_beam.beam_main`) exits with `errors.DATA_ERROR_EXIT` when
the input or the output's place is wrong (a corrupt image, a member it cannot label, no
space left): a retry would read the same bytes, so the task fails at once. Any other
failure (a killed worker, a lost connection) still retries.

Beam's hook asks the interpreter it launches for Beam's version before every pipeline, by
starting it once more to import apache_beam (~2 s a task). The launcher is this
environment's own interpreter (the DAG passes sys.executable), so the version is read from
this environment's package metadata instead; any other interpreter is still asked.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

from airflow.exceptions import AirflowException
from airflow.providers.apache.beam.hooks.beam import BeamHook
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowConfiguration
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from imagenet_beam.errors import DATA_ERROR_EXIT

UP_TO_DATE_LABEL = "up to date"


class LauncherBeamHook(BeamHook):
    """BeamHook that knows Beam's version when the launcher is this very interpreter."""

    def start_python_pipeline(self, variables, py_file, py_options, py_interpreter="python3",
                              py_requirements=None, py_system_site_packages=False,
                              process_line_callback=None, is_dataflow_job_id_exist_callback=None):
        same = py_requirements is None and os.path.realpath(py_interpreter) == os.path.realpath(
            sys.executable
        )
        if not same:
            return super().start_python_pipeline(
                variables, py_file, py_options, py_interpreter, py_requirements,
                py_system_site_packages, process_line_callback,
                is_dataflow_job_id_exist_callback,
            )
        self.log.info("Beam version: %s", metadata.version("apache-beam"))
        self._start_pipeline(
            variables=variables,
            command_prefix=[py_interpreter, *py_options, py_file],
            process_line_callback=process_line_callback,
            is_dataflow_job_id_exist_callback=is_dataflow_job_id_exist_callback,
        )


class ConvertSplitOperator(BeamRunPythonPipelineOperator):
    def __init__(self, *, up_to_date: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.up_to_date = up_to_date

    @property
    def label(self) -> str:
        """The mapped instance's name in the UI: its splits ("train, validation, test"
        for the DirectRunner's one job), or "up to date"."""
        if self.up_to_date:
            return UP_TO_DATE_LABEL
        return ", ".join(str((self.pipeline_options or {}).get("splits", "")).split(","))

    def _init_pipeline_options(self, *args, **kwargs):
        options = super()._init_pipeline_options(*args, **kwargs)
        self.beam_hook = LauncherBeamHook(runner=self.runner)
        return options

    def _cast_dataflow_config(self):
        """The provider fills in an empty DataflowConfiguration when none is given, then
        warns on every other runner that one is defined: nothing to warn about when
        `dataflow_launch.convert_operator_kwargs` passed none."""
        if self.dataflow_config or self.runner.lower() == "dataflowrunner":
            return super()._cast_dataflow_config()
        self.dataflow_config = DataflowConfiguration(job_name=self.task_id)

    def execute(self, context):
        if self.up_to_date:
            message = f"nothing converted: {self.up_to_date}"
            self.log.info(message)
            raise AirflowSkipException(message)
        try:
            return super().execute(context)
        except AirflowFailException:
            raise
        except AirflowException as e:
            if str(e).endswith(f"return code {DATA_ERROR_EXIT}"):
                raise AirflowFailException(
                    "the conversion refused its input (the launcher's `error:` line above "
                    "says what is wrong and what to do); not retried: a retry would read the "
                    "same bytes"
                ) from None
            raise
