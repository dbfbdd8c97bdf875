"""The tables of the jobs store (SQLAlchemy Core); alembic migrations in ``migrations/`` create and change them.

Times are Unix seconds (floats), as OpenAI's objects report them; JSON columns hold what OpenAI's objects nest.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

keys = Table(
    "keys",
    metadata,
    Column("id", String(40), primary_key=True),  # the owner id every other row points at
    Column("name", String(200), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 of the key, hex
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner", String(40), nullable=False, index=True),
    Column("filename", String(255), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("status", String(20), nullable=False),  # uploaded | processed | error
    Column("status_details", Text),
    Column("check", JSON),  # `tunesmith data check`'s result: format, rows, problems by line
    Column("deleted_at", Float),
)

jobs = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),  # queue order and the list cursor
    Column("id", String(40), nullable=False, unique=True),
    Column("owner", String(40), nullable=False, index=True),
    Column("model", String(500), nullable=False),
    Column("training_file", String(40)),
    Column("validation_file", String(40)),
    Column("suffix", String(64)),
    Column("seed", Integer, nullable=False),
    Column("meta", JSON),  # OpenAI's `metadata`
    Column("method", JSON, nullable=False),  # {"type": ..., <type>: {...}} as OpenAI returns it
    Column("hyperparameters", JSON, nullable=False),  # resolved values ("auto" replaced)
    Column("config", JSON, nullable=False),  # the tunesmith run config the worker runs
    Column("status", String(20), nullable=False, index=True),
    Column("requested", String(10)),  # cancel | pause, asked of the worker running the job
    Column("worker", String(200)),
    Column("attempt", Integer, nullable=False, default=0),  # claims so far: the fencing token of the current one
    Column("lost", Integer, nullable=False, default=0),  # claims ended by a worker that stopped beating
    Column("heartbeat_at", Float),
    Column("last_step", Integer, nullable=False, default=0),  # newest step published as an event
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("fine_tuned_model", String(600)),
    Column("trained_tokens", Integer),
    Column("result_files", JSON),
    Column("error", JSON),
)
Index("jobs_queue", jobs.c.status, jobs.c.seq)

events = Table(
    "events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("level", String(8), nullable=False),  # info | warn | error
    Column("type", String(10), nullable=False),  # message | metrics
    Column("message", Text, nullable=False),
    Column("data", JSON),
)
Index("events_by_job", events.c.job_id, events.c.seq)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),
    Column("job_id", String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("name", String(700), nullable=False),  # fine_tuned_model_checkpoint
    UniqueConstraint("job_id", "step"),
)

models = Table(
    "models",
    metadata,
    Column("id", String(600), primary_key=True),  # ft:<base>:<suffix>:<job id>
    Column("owner", String(40), nullable=False, index=True),
    Column("job_id", String(40), nullable=False),
    Column("run_dir", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("deleted_at", Float),
)
