"""The DAG's convert task: Beam's operator, but bad input fails it without a retry, and
no warning about a Dataflow configuration on the DirectRunner.

When the published version is up to date, `plan_conversion` maps the task once with
`up_to_date=<the reason>`: that instance logs why nothing is converted and is skipped, so
the skipped convert task a user clicks on says why (a task mapped over nothing would be
skipped with "no logs available").

The launcher (`python -m imagenet_beam.beam_main`) exits with `errors.DATA_ERROR_EXIT` when
the input or the output's place is wrong (a corrupt image, a member it cannot label, no
space left): a retry would read the same bytes, so the task fails at once. Any other
failure (a killed worker, a lost connection) still retries.
"""

from __future__ import annotations

from airflow.exceptions import AirflowException
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import DataflowConfiguration
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from imagenet_beam.errors import DATA_ERROR_EXIT

UP_TO_DATE_LABEL = "up to date"


class ConvertSplitOperator(BeamRunPythonPipelineOperator):
    def __init__(self, *, up_to_date: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.up_to_date = up_to_date

    @property
    def label(self) -> str:
        """The mapped instance's name in the UI: its split, or "up to date"."""
        if self.up_to_date:
            return UP_TO_DATE_LABEL
        return str((self.pipeline_options or {}).get("splits", ""))

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
