"""Work units on dask.distributed: one model per worker, one task per unit.

A worker plugin loads the model once when a worker starts (and again in a worker
the nanny restarts after a crash); each task computes one unit with the same
``compute_unit`` as an in-process build, under the unit's claim. When a worker dies,
the scheduler re-runs its task elsewhere and the claim of the dead process is taken
over; a worker that is merely slow keeps its claim, and the re-run waits for it.
``local:N`` starts a LocalCluster of N worker processes (dask-cuda's LocalCUDACluster,
one GPU each, when it is installed and GPUs are visible).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import torch
from distributed import Client, LocalCluster, WorkerPlugin, as_completed, get_worker
from tqdm.auto import tqdm

from builders._config import ClusterConfig, CollectConfig
from builders._run import UnitJob, compute_unit
from builders._runtime import ModelRuntime, load_runtime
from store import InputError, Unit
from store.errors import ConfigError, first_line

PLUGIN_NAME = "activation-datasets-model"
_CONNECT_TIMEOUT = "20s"
UNIT_RETRIES = 2


class ModelPlugin(WorkerPlugin):
    """Loads the model once per worker process; tasks find it by name (one name per build, so two
    builds sharing a cluster never swap each other's model)."""

    def __init__(self, config: CollectConfig) -> None:
        self.config = config
        self.name = f"{PLUGIN_NAME}-{uuid.uuid4().hex}"
        self.runtime: ModelRuntime | None = None

    def setup(self, worker: object) -> None:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # one bar per worker would garble the client's
        torch.set_num_threads(max(1, int(getattr(getattr(worker, "state", None), "nthreads", 1))))
        self.runtime = load_runtime(self.config)


def _runtime(name: str, worker: Any = None) -> ModelRuntime:
    plugin = (worker or get_worker()).plugins[name]
    if plugin.runtime is None:  # pragma: no cover - setup runs before any task
        raise RuntimeError("the model plugin did not load the model on this worker")
    return plugin.runtime


def _worker_dtype(name: str, dask_worker: Any) -> str:  # client.run passes the worker by this name
    return _runtime(name, dask_worker).dtype


def _unit_task(job: UnitJob, unit: Unit) -> int:
    return compute_unit(_runtime(job.plugin), job, unit)


@contextlib.contextmanager
def connect(config: ClusterConfig) -> Iterator[Client]:
    """A client of the configured cluster, closed (with a cluster it started) on exit."""
    with contextlib.ExitStack() as stack:
        if config.local_workers:
            cluster = stack.enter_context(_local_cluster(config))
            client = stack.enter_context(Client(cluster))
        else:
            client = stack.enter_context(_remote_client(config.address))
        yield client


def _local_cluster(config: ClusterConfig) -> LocalCluster:
    options = {"n_workers": config.local_workers, "threads_per_worker": config.threads_per_worker,
               "dashboard_address": None, "silence_logs": logging.ERROR}
    if torch.cuda.is_available():
        with contextlib.suppress(ImportError):
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster(**options)
    return LocalCluster(processes=True, **options)


def _remote_client(address: str) -> Client:
    try:
        return Client(address, timeout=_CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as error:
        raise ConfigError(f"cannot reach the dask scheduler {address!r} ({first_line(error)}); "
                          "check --cluster (e.g. tcp://host:8786, or local:N)") from error


@contextlib.contextmanager
def models_on_workers(client: Client, config: CollectConfig) -> Iterator[tuple[str, str]]:
    """Load the model on every worker (and on workers that join or restart) while in the block.

    Yields (plugin name, the dtype every worker runs the model in).
    """
    plugin = ModelPlugin(config)
    try:
        yield plugin.name, _register(client, plugin)
    finally:
        with contextlib.suppress(Exception):  # a cluster we started is closing anyway
            client.unregister_worker_plugin(plugin.name)


def _register(client: Client, plugin: ModelPlugin) -> str:
    try:
        client.register_plugin(plugin)
        dtypes = set(client.run(_worker_dtype, plugin.name).values())
    except InputError:
        raise
    except Exception as error:  # a worker's own error (any type), shown on one line
        raise ConfigError(f"the cluster's workers could not load the model ({first_line(error)}); "
                          "check that every worker sees the model and the project's packages") from error
    if len(dtypes) != 1:
        raise ConfigError(f"the cluster's workers load the model in different dtypes {sorted(dtypes)}; "
                          "pass --model.dtype explicitly")
    return dtypes.pop()


def run_units(client: Client, job: UnitJob, units: list[Unit], progress: tqdm,
              on_committed: Callable[[Unit], None]) -> int:
    """Compute ``units`` on the cluster, in any order; returns the tokens computed."""
    # retries: a unit that failed (e.g. S3 still slowing down after botocore's attempts) runs again,
    # resuming from its checkpoints; a worker that dies is not a failure, dask reruns its task anyway
    futures = {client.submit(_unit_task, job, unit, pure=False, retries=UNIT_RETRIES,
                             key=f"collect-{job.label}-unit-{unit.index}-{job.plugin[-8:]}"): unit
               for unit in units}
    computed = 0
    try:
        for future in as_completed(futures):
            computed += future.result()
            unit = futures[future]
            progress.update(unit.n_tokens)
            on_committed(unit)
    finally:
        client.cancel(list(futures))
    return computed
