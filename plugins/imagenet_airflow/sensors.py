"""Waiting for ImageNet's files (in any input layout) without holding a worker slot."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

DEFAULT_WAIT_MINUTES = 24 * 60
# A scheduled run waits at most this long: nobody is waiting for it, and with one run at a
# time it must not hold up a run a user triggers.
SCHEDULED_WAIT_MINUTES = 5


class ImageNetArchivesSensor(BaseSensorOperator):
    """Succeeds once every requested split is in the manual dir, in one of the input
    layouts (`imagenet_beam.sources`: the tarballs, an extracted ImageFolder tree, the
    Kaggle copy, ...), looked for split by split.

    Each look logs which layout it found for each split, what is still missing and, in the
    words of the layout manual_dir looks like, where to get it; one split there in two
    layouts fails the task at once, naming both. Runs in reschedule mode by
    default, so a long wait for a 147 GB download frees its worker slot between looks.
    Gives up after `wait_timeout_minutes` (counted from the start of the DAG run) with the
    same list; a scheduled run (`dag_run.run_type` "scheduled") after at most
    `scheduled_wait_minutes`, so that it never blocks a triggered run for long.
    """

    template_fields: Sequence[str] = ("manual_dir", "splits", "test_patch", "wait_timeout_minutes")

    def __init__(
        self,
        *,
        manual_dir: str,
        splits: Sequence[str] | str,
        test_patch: str | None = None,
        wait_timeout_minutes: float | str = DEFAULT_WAIT_MINUTES,
        scheduled_wait_minutes: float = SCHEDULED_WAIT_MINUTES,
        **kwargs,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.manual_dir = manual_dir
        self.splits = splits
        self.test_patch = test_patch
        self.wait_timeout_minutes = wait_timeout_minutes
        self.scheduled_wait_minutes = scheduled_wait_minutes

    def _splits(self) -> list[str]:
        if isinstance(self.splits, str):
            return [s.strip() for s in self.splits.strip("[]").replace("'", "").split(",") if s]
        return list(self.splits)

    def _refuse_unknown_params(self, context) -> None:
        """A conf key that is no param of the DAG (a typo such as `num_shard`) would be
        ignored: the run fails here, first, naming the nearest param."""
        import difflib

        from imagenet_beam.settings import SETTINGS

        declared = set(self.dag.params) if self.dag else set()
        older_names = {alias for s in SETTINGS for alias in s.aliases}
        unknown = sorted(set(context["params"]) - declared - older_names)
        if not declared or not unknown:
            return
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(declared), n=1)
            problems.append(f"unknown param {key!r}" + (
                f" (did you mean {close[0]!r}?)" if close else ""
            ))
        raise AirflowFailException(
            "; ".join(problems) + ". The trigger form lists the params; trigger again."
        )

    def poke(self, context) -> bool | PokeReturnValue:
        from imagenet_beam import run
        from imagenet_beam.settings import Settings

        self._refuse_unknown_params(context)
        try:
            run_settings = Settings.from_mapping(context["params"])
            run.check_paths(run_settings)
        except (run.ConvertError, ValueError) as e:
            raise AirflowFailException(str(e)) from None

        looking_for = run_settings.replace(
            manual_dir=self.manual_dir, splits=self._splits(), test_patch=self.test_patch or None
        )
        try:
            inputs, message = run.look_for_inputs(looking_for)
        except run.ConvertError as e:  # one split in two layouts: waiting cannot help
            raise AirflowFailException(str(e)) from None
        if message is None:
            sources = {split: source.paths or [source.archive]
                       for split, source in inputs.splits.items()}
            self.log.info("every split is there: %s", run.found_text(inputs))
            return PokeReturnValue(is_done=True, xcom_value=sources)
        if inputs.splits:
            self.log.info("found %s", run.found_text(inputs))
        dag_run = context["dag_run"]
        started = dag_run.start_date or datetime.datetime.now(datetime.UTC)
        waited = datetime.datetime.now(datetime.UTC) - started
        limit = datetime.timedelta(minutes=float(self.wait_timeout_minutes))
        run_type = getattr(dag_run, "run_type", None)
        scheduled = getattr(run_type, "value", run_type) == "scheduled"
        if scheduled and float(self.scheduled_wait_minutes) < float(self.wait_timeout_minutes):
            limit = datetime.timedelta(minutes=float(self.scheduled_wait_minutes))
            if waited >= limit:
                raise AirflowSensorTimeout(
                    f"scheduled run: gave up after waiting {waited} (a scheduled run waits at "
                    f"most {self.scheduled_wait_minutes} minutes, so that it does not hold up "
                    f"a triggered run): {message} Trigger the DAG once they are there (a "
                    "triggered run waits wait_timeout_minutes)."
                )
        if waited >= limit:
            raise AirflowSensorTimeout(
                f"gave up after waiting {waited} (wait_timeout_minutes="
                f"{self.wait_timeout_minutes}): {message}"
            )
        self.log.warning("still waiting (%s of %s): %s", waited, limit, message)
        return False
