"""Where the parts run: in this process, in a local process pool, or as tasks on a Ray cluster.

Every executor takes the same `PartTask`s and yields each part's stats as it finishes (in any
order: assembly reads the parts in their own order, so the output does not depend on it). A
task and its result are small; the documents themselves go from input files to part folders
inside the worker, so the parent holds only the queue of pending part descriptions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from cptkit.data.curate import PartTask, process_part
from cptkit.errors import UserError

log = logging.getLogger(__name__)


def run_local(tasks: list[PartTask], workers: int) -> Iterator[dict]:
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield process_part(task)
        return
    import multiprocessing as mp

    # spawn, not fork: the parent may hold torch and Rust thread pools that do not survive fork.
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap_unordered(process_part, tasks, chunksize=1)


def run_ray(tasks: list[PartTask], address: str | None, max_in_flight: int = 0) -> Iterator[dict]:
    """Each part is one Ray task; at most `max_in_flight` (default: cluster CPUs x 2) at a time."""
    try:
        import ray
    except ImportError:
        raise UserError("data.executor: ray needs the ray package: pip install 'cptkit[ray]'") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=2)(process_part)
        limit = max_in_flight or max(int(ray.cluster_resources().get("CPU", 1)) * 2, 1)
        pending, queue = [], list(tasks)
        while queue or pending:
            while queue and len(pending) < limit:
                pending.append(remote.remote(queue.pop(0)))
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, UserError):
                    raise UserError(str(cause)) from None
                raise
    finally:
        if started:
            ray.shutdown()


def run_tasks(tasks: list[PartTask], executor: str, workers: int, address: str | None = None) -> Iterator[dict]:
    if executor == "ray":
        yield from run_ray(tasks, address)
    else:
        yield from run_local(tasks, workers)
