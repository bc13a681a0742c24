"""`--gpus N`: run the same ltx-lora command in N processes on this machine under torch.distributed.run.

This is exactly `torchrun --standalone --nproc-per-node N -m ltx_lora ARGS` (a free local port is picked, so two
runs on one machine do not collide). The workers print their own messages; a failed worker's exit status
becomes ours (2 for bad input, as with one process), without torchrun's own traceback. Several machines: start
torchrun yourself on each (README, "Several GPUs").
"""

from __future__ import annotations

import logging
import os

import torch

from ltx_lora.distributed.env import under_torchrun
from ltx_lora.errors import UserError


def torchrun_args(gpus: int, command: list[str]) -> list[str]:
    return ["--standalone", "--nproc-per-node", str(gpus), "-m", "ltx_lora", *command]


def run_on_gpus(gpus: int, command: list[str], say=print) -> int:
    """Run `ltx-lora COMMAND` in `gpus` processes and wait; the exit status of the whole group."""
    if under_torchrun():
        raise UserError("--gpus starts torchrun itself; under torchrun (or a scheduler that sets LOCAL_RANK) leave "
                        "--gpus out and set torchrun's --nproc-per-node instead.")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if gpus > count:
            raise UserError(f"--gpus {gpus} asks for more GPUs than this machine has ({count}); use --gpus {count} "
                            "or fewer (CUDA_VISIBLE_DEVICES limits which ones are used).")
    else:
        say(f"no CUDA GPU found: running {gpus} CPU processes (gloo); this is for tests and tiny models.")
    # Quiet torchrun's own agent (its banner, worker-failure tracebacks): the workers say what went wrong.
    os.environ.setdefault("LOGLEVEL", "CRITICAL")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // gpus)))
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(torchrun_args(gpus, command)))
    except SignalException as e:  # SIGTERM / SIGHUP to this process: torchrun passed it on to the workers, which
        return 128 + int(e.sigval)  # finish their step and save it (they say so); the status a shell expects
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:  # killed by a signal: the worker could not say why
            say(f"worker {rank} was killed by signal {-failure.exitcode} (out of memory?); the other workers "
                "were stopped. Resume with --resume.")
            return 1
        return failure.exitcode
    return 0
