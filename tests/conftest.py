"""Shared fixtures: generated ImageNet-shaped inputs and runs of the real pipeline."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m imagenet_beam ...` in a fresh process, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "imagenet_beam", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"imagenet_beam {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-5000:]}"
        )
    return proc


def convert(manual_dir, data_dir, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """The CLI's convert; generated archives cannot match image-net.org's checksums, so
    they are checked for readability only (unless a test passes --verify_checksums)."""
    verify = [] if any(a.startswith("--verify_checksums") for a in extra) else [
        "--verify_checksums=false"
    ]
    return run_cli(
        "convert",
        f"--manual_dir={manual_dir}",
        f"--data_dir={data_dir}",
        "--runner=DirectRunner",
        *verify,
        *extra,
        check=check,
    )


def version_dir(data_dir) -> str:
    return os.path.join(str(data_dir), "imagenet2012", "5.1.0")


def read_tfrecord_examples(version_path: str, split: str) -> dict[str, tuple[int, bytes]]:
    """file_name → (label, image bytes), read with tf.data from the split's shards."""
    import glob

    import tensorflow as tf

    pattern = f"imagenet2012-{split}.tfrecord-?????-of-?????"  # not a DALI .idx beside them
    files = sorted(glob.glob(os.path.join(version_path, pattern)))
    assert files, f"no {split} shards in {version_path}"
    spec = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "file_name": tf.io.FixedLenFeature([], tf.string),
    }
    out = {}
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, spec)
        out[ex["file_name"].numpy().decode()] = (int(ex["label"].numpy()), ex["image"].numpy())
    return out


def tfrecord_spans(data: bytes) -> list[tuple[int, int]]:
    """(offset, size) of every record of a TFRecord file, walked record by record as DALI's
    tfrecord2idx does (size: the framed record, 8-byte length, 4-byte CRC, data, 4-byte
    CRC): what each line of its .idx must say."""
    import struct

    spans, position = [], 0
    while position < len(data):
        (length,) = struct.unpack_from("<Q", data, position)
        size = 8 + 4 + length + 4
        assert position + size <= len(data), f"a record at {position} runs past the end"
        spans.append((position, size))
        position += size
    return spans


def dali_index_lines(data: bytes) -> list[tuple[int, int]]:
    """The (offset, size) pairs of an .idx file's lines."""
    return [tuple(int(f) for f in line.split()) for line in data.decode().splitlines()]


def shard_digests(lineage: dict) -> dict[str, list[str]]:
    """split → its shards' sha256 in order, from a lineage.json record: what "the same
    shards" means between two conversions."""
    return {s: [x["sha256"] for x in info["shards"]] for s, info in lineage["splits"].items()}


def published_shard_digests(data_dir) -> dict[str, list[str]]:
    import json

    with open(os.path.join(version_dir(data_dir), "lineage.json")) as f:
        return shard_digests(json.load(f))


def layout_images(directory: str, **overrides):
    """A small generated image set for writing in every input layout: awkward images
    included (fixed the same way from any layout), the test split with its patch (every
    layout but the tarballs holds it patched)."""
    from imagenet_beam import synthetic

    counts = dict(num_classes=3, train_per_class=4, num_validation=8, num_test=4, num_patched=1,
                  awkward=["cmyk_tfds_name", "grayscale"], test_archives=("2012", "patch"))
    return synthetic.generate_manual_dir(directory, **{**counts, **overrides})


@pytest.fixture(autouse=True)
def dag_params_restored(request):
    """A `dag.test()` run's conf stays in the DAG object's params (its tasks run in this
    process and update them), and `imagenet_dag` is one DAG for the session: every test
    that uses it starts and ends with the params it was parsed with (put back before too:
    a module's fixture may have run the DAG with its own conf already)."""
    if "imagenet_dag" not in request.fixturenames:
        yield
        return
    from tests.dags.conftest import restore_parsed_params

    dag = request.getfixturevalue("imagenet_dag")
    restore_parsed_params(dag)
    yield
    restore_parsed_params(dag)


@pytest.fixture(scope="session")
def busy_input(tmp_path_factory):
    """Enough images that a conversion takes a while: time to start another beside it."""
    from imagenet_beam import synthetic

    manual = tmp_path_factory.mktemp("busy_input")
    synthetic.generate_manual_dir(
        str(manual), num_classes=20, train_per_class=80, num_validation=100,
        splits=("train", "validation"), image_size=(320, 240),
    )
    return manual


def start_convert(manual, data_dir, *extra):
    """A command line conversion of train and validation, running in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "imagenet_beam", "convert", f"--manual_dir={manual}",
         f"--data_dir={data_dir}", "--splits=train,validation", "--verify_checksums=false",
         "--runner=DirectRunner", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: `paused` stops all of it
    )


def _group_states(pgid: int) -> list[str]:
    """The states of every thread (/proc/<pid>/task/<tid>/stat) of the processes in
    process group `pgid`."""
    states = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[2]) != pgid:
                    continue
            for tid in os.listdir(f"/proc/{entry}/task"):
                with open(f"/proc/{entry}/task/{tid}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
        except OSError:
            continue  # gone meanwhile
    return states


def _wait_until_stopped(pgid: int, timeout: float = 10.0) -> None:
    """SIGSTOP takes effect when a thread leaves the kernel: a write in flight still
    lands. Wait until every process of the group shows as stopped (T) or gone (Z)."""
    import time

    deadline = time.monotonic() + timeout
    while any(state not in "TtZX" for state in _group_states(pgid)):
        assert time.monotonic() < deadline, f"process group {pgid} did not stop"
        time.sleep(0.01)


@contextlib.contextmanager
def paused(proc):
    """`proc` and its children stopped (SIGSTOP) for a block: a holder of the lease that
    stays in place however long the other side takes to start; continued afterwards."""
    import signal

    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        _wait_until_stopped(proc.pid)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def wait_for_holder(data_dir, proc, timeout=120.0, run_id_prefix=None) -> dict:
    """The version's lease record once `proc` holds it (or a run whose id starts with
    `run_id_prefix`: a DAG run inside `proc`)."""
    import json
    import time

    from imagenet_beam.layout import OutputLayout

    path = OutputLayout(str(data_dir)).lease_file
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with open(path) as f:
                record = json.loads(f.read() or "null")
        except (OSError, ValueError):
            record = None
        if record and (record["run_id"].startswith(run_id_prefix) if run_id_prefix
                       else record["owner"].startswith(f"pid {proc.pid} ")):
            return record
        time.sleep(0.05)
    raise AssertionError("the conversion never took the lease")



@pytest.fixture(scope="session")
def awkward_input(tmp_path_factory):
    """Every awkward (but valid) member real ImageNet has; test tar as TFDS expects it."""
    from imagenet_beam import synthetic

    return synthetic.generate_manual_dir(
        str(tmp_path_factory.mktemp("awkward_manual")),
        awkward=True,
        test_archives=("2012",),
    )


@pytest.fixture(scope="session")
def tfrecord_output(awkward_input, tmp_path_factory):
    """The pipeline on the awkward input, on two worker processes, as TFRecord."""
    data_dir = tmp_path_factory.mktemp("tfrecord_out")
    proc = convert(
        awkward_input.manual_dir,
        data_dir,
        "--file_format=tfrecord",
        "--num_shards=3",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    )
    return version_dir(data_dir), proc


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    """A `dask scheduler` and two `dask worker` processes on localhost (free ports, a
    memory limit each: `tests/dask_cluster.py`); torn down at the end of the session."""
    from tests.dask_cluster import LocalhostCluster

    cluster = LocalhostCluster(str(tmp_path_factory.mktemp("dask_cluster")))
    try:
        yield cluster.start(workers=2)
    finally:
        cluster.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory):
    """A real GCS JSON API server on localhost (gcp-storage-emulator, with GCS's generation
    preconditions: `tests/gcs/gcs_server.py`), for `gs://` paths.

    `STORAGE_EMULATOR_HOST` points google-cloud-storage and Beam's GCS filesystem at it, in
    this process and in every process started after (Airflow tasks, Beam workers).
    """
    import time
    import urllib.request

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("gcs_server") / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - kept open for the server's lifetime
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.gcs.gcs_server", "--host=127.0.0.1", f"--port={port}"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                problem = f"the GCS server did not start: {log_path.read_text()}"
                raise RuntimeError(problem) from None
            time.sleep(0.2)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_server, request):
    """A new, empty bucket on the local GCS server; yields its `gs://` URL."""
    import re
    import uuid

    from google.cloud import storage as gcs

    client = gcs.Client.create_anonymous_client()
    client.project = "test-project"
    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(name)
    yield f"gs://{name}"


def gcs_client():
    """A google-cloud-storage client for the local server (tests read back through it)."""
    from google.cloud import storage as gcs

    client = gcs.Client.create_anonymous_client()
    client.project = "test-project"
    return client
