"""A Dagster code location: a Connect platform's sync as one job of K ops, each running one
shard's `meltano run`, hourly, each op retried on its own.

    dagster dev -m tap_stripe_dd.orchestration        # the UI, the job and its schedule
    dagster job execute -m tap_stripe_dd.orchestration -j stripe_shards

Shard k runs `meltano run --state-id-suffix shard-k JOB` with `account_shard: k/K`, so every
shard has a state id of its own and Meltano's guard against two runs of one state id stays on
(`--force` only past a dead run of the same shard). The ops share nothing but the Meltano
project and the databases its settings name: the state in `MELTANO_DATABASE_URI` (a PostgreSQL
system database every worker reaches) and the warehouse (target-postgres: DuckDB takes one
writing process). Dagster's multiprocess executor runs the ops side by side on one machine; the
same definitions run on its Docker or Kubernetes executors (set `executor_def`, or the run's
executor config) unchanged.

Settings, from the environment of the Dagster process (or the op's run config):
`STRIPE_DD_SHARDS` (3), `STRIPE_DD_MELTANO_JOB` (stripe-to-postgres),
`STRIPE_DD_MELTANO_ENVIRONMENT` (Meltano's default), `STRIPE_DD_PROJECT` (this project).
Plugins must be installed first (`meltano install`), in each worker's image elsewhere.
"""

# No `from __future__ import annotations`: Dagster reads the ops' annotations as types.
import json
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import dagster as dg
from dagster import OpExecutionContext

from tap_stripe_dd.demo import project_root
from tap_stripe_dd.sync import RunningJobs, dead_jobs

SHARDS = int(os.environ.get("STRIPE_DD_SHARDS", "3"))
JOB = os.environ.get("STRIPE_DD_MELTANO_JOB", "stripe-to-postgres")
RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL)
TAIL_LINES = 20
PLUGIN_DIRS = ("extractors", "loaders")


def shard_command(root: Path, k: int) -> list[str]:
    """`meltano run` of shard k; with `--force` only past a run of this shard that died (its
    job still RUNNING in the system database, no heartbeat for seconds), as `stripe-dd sync`
    decides; a live run of the shard fails the op (SyncBusy), to be retried."""
    environment = os.environ.get("STRIPE_DD_MELTANO_ENVIRONMENT")
    dead = dead_jobs(RunningJobs(root, environment, f":shard-{k}").heartbeats)
    return [
        str(Path(sys.executable).parent / "meltano"),
        *(("--environment", environment) if environment else ()),
        "run",
        *(("--force",) if dead else ()),
        "--state-id-suffix",
        f"shard-{k}",
        JOB,
    ]


def shard_sys_dir(root: Path, k: int) -> Path:
    """Meltano writes a run's state and catalog to fixed paths under `.meltano/run/`, so shards
    side by side on one machine would overwrite each other's: each gets a `.meltano` of its own,
    sharing the plugins `meltano install` installed."""
    shared = root / ".meltano"
    own = shared / "shards" / f"shard-{k}"
    own.mkdir(parents=True, exist_ok=True)
    for plugins in PLUGIN_DIRS:
        link = own / plugins
        if not link.is_symlink():
            link.symlink_to(Path("..") / ".." / plugins)
    return own


def run_meltano(
    context: OpExecutionContext, what: str, command: list[str], env: dict, stdin: str = ""
) -> None:
    """Meltano's output goes to the op's stdout (Dagster's compute log); its last lines to the
    failure's metadata."""
    root = project()
    context.log.info(" ".join(command))
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    with subprocess.Popen(
        command,
        cwd=root,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as run:
        assert run.stdin is not None and run.stdout is not None
        run.stdin.write(stdin)
        run.stdin.close()
        for line in run.stdout:
            tail.append(line.rstrip())
            sys.stdout.write(line)
    if run.returncode != 0:
        raise dg.Failure(
            description=f"{what}: meltano exited {run.returncode}",
            metadata={"exit code": run.returncode, "last lines": "\n".join(tail)},
        )


def project() -> Path:
    return Path(os.environ.get("STRIPE_DD_PROJECT") or project_root(Path.cwd()))


@dg.op(retry_policy=RETRY)
def prepare(context: OpExecutionContext) -> None:
    """Meltano's system database migrated and the warehouse's tables created once, before the
    shards: runs that each create them at the same moment collide (duplicate keys in
    PostgreSQL's catalog). The tables come from the loader itself, fed the tap's schemas."""
    meltano = str(Path(sys.executable).parent / "meltano")
    env = dict(os.environ)
    run_meltano(context, "system database", [meltano, "upgrade", "database"], env)
    found = subprocess.run(
        [meltano, "invoke", "tap-stripe-dd", "--discover"],
        cwd=project(),
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        raise dg.Failure(
            description="tap-stripe-dd --discover failed",
            metadata={"last lines": found.stderr[-2000:]},
        )
    schemas = "".join(
        json.dumps(
            {
                "type": "SCHEMA",
                "stream": entry["tap_stream_id"],
                "schema": entry["schema"],
                "key_properties": entry.get("key_properties", []),
            }
        )
        + "\n"
        for entry in json.loads(found.stdout)["streams"]
    )
    loader = os.environ.get("STRIPE_DD_MELTANO_LOADER", "target-postgres")
    run_meltano(context, "tables", [meltano, "invoke", loader], env, stdin=schemas)


def shard_op(k: int, shards: int) -> dg.OpDefinition:
    @dg.op(
        name=f"shard_{k}_of_{shards}",
        description=f"meltano run of the accounts in shard {k}/{shards}",
        ins={"ready": dg.In(dg.Nothing)},
        retry_policy=RETRY,
    )
    def run_shard(context: OpExecutionContext) -> dg.Output[int]:
        root = project()
        env = os.environ | {
            "TAP_STRIPE_DD_ACCOUNT_SHARD": f"{k}/{shards}",
            "MELTANO_SYS_DIR_ROOT": str(shard_sys_dir(root, k)),
        }
        run_meltano(context, f"shard {k}/{shards}", shard_command(root, k), env)
        return dg.Output(k, metadata={"shard": f"{k}/{shards}", "state id suffix": f"shard-{k}"})

    return run_shard


SHARD_OPS = [shard_op(k, SHARDS) for k in range(1, SHARDS + 1)]


@dg.job(
    description=f"The platform's accounts in {SHARDS} shards, side by side",
    # Every shard at once (the executor's default is one op per CPU).
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": SHARDS}),
)
def stripe_shards() -> None:
    ready = prepare()
    for op in SHARD_OPS:
        op(ready)


defs = dg.Definitions(
    jobs=[stripe_shards],
    schedules=[
        dg.ScheduleDefinition(
            name="stripe_shards_hourly", job=stripe_shards, cron_schedule="0 * * * *"
        )
    ],
)
