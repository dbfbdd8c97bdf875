"""The jobs service through the official openai client, against a real `tunesmith serve --jobs` process with its
worker on a SQLite store: files, supervised and DPO jobs on the tiny model, events, checkpoints, the fine-tuned
model answering, cancel, pause and resume, malformed uploads, keys, and errors in OpenAI's shape."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import torch
from safetensors.torch import load_file

from tests.helpers.jobs import Service, chat_file, dpo_file, jobs_server, wait_for, wait_for_step

FAST = {"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 50}  # 16 rows: 4 steps, lr 1e-2


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with jobs_server(tmp_path_factory.mktemp("jobs")) as running:
        yield running


@pytest.fixture(scope="module")
def alice(service: Service) -> openai.OpenAI:
    return service.client("alice")


@pytest.fixture(scope="module")
def chats(alice: openai.OpenAI, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = chat_file(tmp_path_factory.mktemp("data") / "train.jsonl")
    with path.open("rb") as handle:
        uploaded = alice.files.create(file=handle, purpose="fine-tune")
    assert uploaded.status == "processed" and uploaded.status_details is None
    return uploaded.id


@pytest.fixture(scope="module")
def finished(
    alice: openai.OpenAI, chats: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> object:
    held_out = chat_file(tmp_path_factory.mktemp("valid") / "valid.jsonl", n=4, skip=16)
    valid = alice.files.create(file=held_out.open("rb"), purpose="fine-tune")
    job = alice.fine_tuning.jobs.create(
        model=str(tiny_model_dir),
        training_file=chats,
        validation_file=valid.id,
        suffix="sst2",
        seed=7,
        metadata={"team": "ml", "ticket": "19"},
        method={"type": "supervised", "supervised": {"hyperparameters": FAST}},
    )
    assert job.status == "queued" and job.object == "fine_tuning.job"
    return wait_for(alice, job.id, "succeeded")


def test_files_are_listed_read_and_deleted(alice: openai.OpenAI, chats: str, tmp_path: Path) -> None:
    assert chats in [f.id for f in alice.files.list()]
    assert alice.files.retrieve(chats).filename == "train.jsonl"
    content = alice.files.content(chats).content
    assert len(content.decode().splitlines()) == 16
    spare = alice.files.create(
        file=("dir/../spare.jsonl", chat_file(tmp_path / "s.jsonl", 4).read_bytes()), purpose="fine-tune"
    )
    assert spare.filename == "spare.jsonl"  # a label, never a path
    page = alice.files.list(limit=1)
    assert [f.id for f in page.data] == [spare.id] and page.has_more  # newest first
    assert [f.id for f in alice.files.list(limit=1, after=spare.id).data] == [chats]
    assert alice.files.delete(spare.id).deleted
    assert spare.id not in [f.id for f in alice.files.list()]


def test_a_supervised_job_trains_reports_and_serves_its_model(
    alice: openai.OpenAI, finished: object, tiny_model_dir: Path
) -> None:
    job = finished
    assert job.fine_tuned_model == f"ft:{tiny_model_dir.name}:sst2:{job.id}"
    assert job.trained_tokens and job.finished_at and job.hyperparameters.n_epochs == 1
    assert job.method.type == "supervised" and job.seed == 7
    events = list(alice.fine_tuning.jobs.list_events(job.id, limit=100))
    steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert sorted(steps) == [1, 2, 3, 4] and all("train_loss" in e.data for e in events if e.type == "metrics")
    messages = [e.message for e in events]
    assert messages[0] == f"New fine-tuned model created: {job.fine_tuned_model}"  # newest first
    assert "Files validated, moving job to queued state" in messages
    page = alice.fine_tuning.jobs.list_events(job.id, limit=3)
    assert len(page.data) == 3 and page.has_more
    older = alice.fine_tuning.jobs.list_events(job.id, limit=3, after=page.data[-1].id)
    assert older.data[0].id not in {e.id for e in page.data}

    checkpoints = alice.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [4, 3, 2, 1]
    assert all(c.metrics.train_loss is not None and c.fine_tuning_job_id == job.id for c in checkpoints)
    assert all(c.metrics.valid_loss is not None for c in checkpoints)  # the validation file, every checkpoint

    models = [m.id for m in alice.models.list()]
    assert job.fine_tuned_model in models
    reply = alice.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "Sentiment of: a great movie"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None and reply.model == job.fine_tuned_model

    metrics = alice.files.content(job.result_files[0]).content.decode()
    assert metrics.splitlines()[0].startswith("step,loss")


def test_jobs_are_listed_newest_first_and_filtered_by_metadata(alice: openai.OpenAI, finished: object) -> None:
    assert finished.id in [j.id for j in alice.fine_tuning.jobs.list()]
    assert [j.id for j in alice.fine_tuning.jobs.list(metadata={"ticket": "19"})] == [finished.id]
    assert alice.fine_tuning.jobs.list(metadata={"ticket": "20"}).data == []


def test_keys_see_only_their_own(service: Service, alice: openai.OpenAI, finished: object, chats: str) -> None:
    wrong = openai.OpenAI(base_url=f"{service.url}/v1", api_key="ts-not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.fine_tuning.jobs.list()
    assert caught.value.body["code"] == "invalid_api_key"
    bob = service.client("bob")
    with pytest.raises(openai.NotFoundError):
        bob.fine_tuning.jobs.retrieve(finished.id)
    with pytest.raises(openai.NotFoundError):
        bob.fine_tuning.jobs.list_events(finished.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(chats)
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.create(model=finished.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    assert finished.fine_tuned_model not in [m.id for m in bob.models.list()]
    assert bob.fine_tuning.jobs.list().data == []


def test_uploads_over_the_limit_and_other_purposes_are_refused(alice: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        alice.files.create(file=("big.jsonl", b"x" * 300_000), purpose="fine-tune")  # the server allows 200,000
    assert caught.value.status_code == 413 and caught.value.body["code"] == "file_too_large"
    with pytest.raises(openai.BadRequestError) as caught:
        alice.files.create(file=("a.jsonl", b"{}"), purpose="assistants")
    assert caught.value.body["param"] == "purpose"


def test_a_malformed_upload_is_an_error_naming_its_lines(alice: openai.OpenAI) -> None:
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    text = f"{good}\nnot json\n{json.dumps({'messages': [{'role': 'user', 'content': 'hi'}]})}\n"
    bad = alice.files.create(file=("bad.jsonl", io.BytesIO(text.encode())), purpose="fine-tune")
    assert bad.status == "error"
    assert "line 2: malformed JSON" in bad.status_details and "line 3:" in bad.status_details
    with pytest.raises(openai.BadRequestError) as caught:
        alice.fine_tuning.jobs.create(model="tiny", training_file=bad.id)
    assert caught.value.body["param"] == "training_file"


@pytest.mark.parametrize(
    ("hyperparameters", "param"),
    [
        ({"n_epochs": 0}, "method.supervised.hyperparameters.n_epochs"),
        ({"batch_size": "large"}, "method.supervised.hyperparameters.batch_size"),
        ({"learning_rate_multiplier": -1}, "method.supervised.hyperparameters.learning_rate_multiplier"),
    ],
)
def test_invalid_hyperparameters_are_openai_errors_naming_the_field(
    alice: openai.OpenAI, chats: str, hyperparameters: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        alice.fine_tuning.jobs.create(
            model="tiny",
            training_file=chats,
            method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        )
    error = caught.value.body
    assert error["param"] == param and param in error["message"] and error["type"] == "invalid_request_error"


def test_a_deleted_model_no_longer_answers(alice: openai.OpenAI, finished: object, service: Service) -> None:
    assert alice.models.delete(finished.fine_tuned_model).deleted
    assert finished.fine_tuned_model not in [m.id for m in alice.models.list()]
    with pytest.raises(openai.NotFoundError):
        alice.chat.completions.create(model=finished.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    response = httpx.get(f"{service.url}/v1/models", headers={"Authorization": f"Bearer {service.keys['alice']}"})
    assert response.status_code == 200


def test_a_dpo_job_trains_on_openai_preference_rows(alice: openai.OpenAI, tiny_model_dir: Path, tmp_path: Path) -> None:
    with dpo_file(tmp_path / "dpo.jsonl").open("rb") as handle:
        pairs = alice.files.create(file=handle, purpose="fine-tune")
    assert pairs.status == "processed", pairs.status_details
    hyper = {"n_epochs": 1, "batch_size": 4, "beta": 0.2, "learning_rate_multiplier": 20}
    job = alice.fine_tuning.jobs.create(
        model=str(tiny_model_dir), training_file=pairs.id, method={"type": "dpo", "dpo": {"hyperparameters": hyper}}
    )
    done = wait_for(alice, job.id, "succeeded")
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.2
    steps = [e.data["step"] for e in alice.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert sorted(steps) == [1, 2, 3, 4]


LONG = {"n_epochs": 25, "batch_size": 4, "learning_rate_multiplier": 10}  # 100 steps, ~6 s of training


def test_cancel_stops_the_run_within_seconds(
    alice: openai.OpenAI, service: Service, chats: str, tiny_model_dir: Path
) -> None:
    job = alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=chats, hyperparameters=LONG)
    wait_for_step(alice, job.id, 2)
    started = time.monotonic()
    cancelled = alice.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and time.monotonic() - started < 10
    metrics = service.home / "runs" / job.id / "metrics.jsonl"
    logged = metrics.read_text().count("\n")
    time.sleep(1.5)
    assert metrics.read_text().count("\n") == logged < 100  # the training process is gone
    assert alice.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        alice.fine_tuning.jobs.resume(job.id)


def test_pause_checkpoints_and_resume_continues_bitwise(
    alice: openai.OpenAI, service: Service, chats: str, tiny_model_dir: Path
) -> None:
    create = {"model": str(tiny_model_dir), "training_file": chats, "seed": 3, "hyperparameters": LONG}
    paused = alice.fine_tuning.jobs.create(**create)
    wait_for_step(alice, paused.id, 3)
    assert alice.fine_tuning.jobs.pause(paused.id).status == "paused"
    at = int(alice.fine_tuning.jobs.list_events(paused.id, limit=1).data[0].message.rsplit(" ", 1)[-1])
    assert 3 <= at < 100 and at in [c.step_number for c in alice.fine_tuning.jobs.checkpoints.list(paused.id)]
    straight = alice.fine_tuning.jobs.create(**create)  # queued behind nothing: runs while the other is paused
    wait_for(alice, straight.id, "succeeded")
    assert alice.fine_tuning.jobs.resume(paused.id).status == "queued"
    wait_for(alice, paused.id, "succeeded")
    events = list(alice.fine_tuning.jobs.list_events(paused.id, limit=200))
    assert sorted(e.data["step"] for e in events if e.type == "metrics") == list(range(1, 101))  # each step once
    ours, reference = (
        load_file(service.home / "runs" / j / "model" / "adapter_model.safetensors") for j in (paused.id, straight.id)
    )
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


SAYS_LABEL = {"type": "string_check", "name": "says_label", "input": "{{ sample.output_text }}",
              "reference": "{{ item.reference }}", "operation": "ilike"}  # fmt: skip


def test_a_reinforcement_job_runs_grpo_with_its_grader_as_reward(
    alice: openai.OpenAI, chats: str, tiny_model_dir: Path, service: Service
) -> None:
    hyper = {"n_epochs": 1, "batch_size": 4, "compute_multiplier": "auto"}
    method = {"type": "reinforcement", "reinforcement": {"grader": SAYS_LABEL, "hyperparameters": hyper}}
    job = alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=chats, method=method)
    assert job.method.reinforcement.grader.name == "says_label"
    wait_for(alice, job.id, "succeeded")
    steps = [e.data for e in alice.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"]
    assert len(steps) == 4 and all(0.0 <= s["reward"] <= 1.0 for s in steps)
    bad = {"type": "reinforcement", "reinforcement": {"grader": {"type": "string_check", "name": "x"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=chats, method=bad)
    assert caught.value.body["param"] == "method.reinforcement.grader"


def test_a_tunesmith_config_job_runs_what_openais_methods_cannot_express(
    alice: openai.OpenAI, chats: str, tiny_model_dir: Path, service: Service
) -> None:
    config = {"method": {"name": "full"}, "training": {"max_steps": 3, "batch_size": 4, "save_every": 3}}
    job = alice.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=chats, extra_body={"config": config})
    wait_for(alice, job.id, "succeeded")
    assert [c.step_number for c in alice.fine_tuning.jobs.checkpoints.list(job.id)] == [3]
    assert (service.home / "runs" / job.id / "model" / "model.safetensors").is_file()  # whole weights, not LoRA
    with pytest.raises(openai.BadRequestError) as caught:
        alice.fine_tuning.jobs.create(
            model=str(tiny_model_dir), training_file=chats, extra_body={"config": {"training": {"lerning_rate": 1}}}
        )
    assert (
        caught.value.body["param"] == "config.training.lerning_rate" and "did you mean" in caught.value.body["message"]
    )
