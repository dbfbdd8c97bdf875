"""New run: a form generated from the config schema, checked with the CLI's own messages, the predicted memory and
time before launch, the YAML shown, downloadable and loadable (the same file `tunesmith run` takes), and launch
through the jobs service."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import yaml
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from tunesmith.core.config import ConfigError
from tunesmith.core.errors import TunesmithError
from tunesmith.jobs.service import create_local_job
from tunesmith.studio import config_form
from tunesmith.studio.context import OWNER, Studio, studio
from tunesmith.studio.layout import render
from tunesmith.studio.pages import Page
from tunesmith.studio.workspace import Workspace

router = APIRouter()


@router.get("/new", response_class=HTMLResponse, include_in_schema=False)
def page(request: Request) -> str:
    return render(request, "new_run.html.j2", active="new")


@router.get("/api/new/form")
def form(ts: Studio = Depends(studio)) -> dict[str, Any]:
    """The fields of every section, the methods of each task, and the workspace's data files."""
    return config_form.form() | {"files": ts.workspace.data_files()}


class Values(BaseModel):
    values: dict[str, Any]  # "section.key" -> value, as the form holds them


def _config(values: dict[str, Any]) -> dict[str, Any]:
    """The config as written to YAML: what the form set (paths as typed, relative to the workspace)."""
    return config_form.nest({k: v for k, v in values.items() if v is not None and v != ""})


def _yaml(raw: dict[str, Any]) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


def resolved(workspace: Workspace, raw: dict[str, Any]) -> dict[str, Any]:
    """The config with every file it names resolved inside the workspace (refused when outside or missing)."""
    raw = copy.deepcopy(raw)
    if (raw.get("data") or {}).get("mix"):  # more files in each entry: not confined here, so not accepted
        raise TunesmithError(
            "data.mix (multi-task mixes) is not launched from the studio.\n"
            "  fix: write it in the YAML and run it with `tunesmith run` in the workspace"
        )
    model = raw.get("model") or {}
    if isinstance(model.get("name"), str) and model["name"].strip():
        model["name"] = workspace.model_name(model["name"])
    _confine_models(workspace, raw.get("eval") or {})
    augment = (raw.get("data") or {}).get("augment") or {}
    for key in ("translate_to", "translate_back"):  # translation models: an alias, a hub id or a workspace folder
        if isinstance(augment.get(key), str) and augment[key].strip():
            augment[key] = workspace.model_name(augment[key])
    for key in (*config_form.PATH_KEYS, "eval.graders", "data.augment.synonyms"):
        section, _, rest = key.partition(".")
        node = raw.get(section)
        parts = rest.split(".")
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        value = node.get(parts[-1]) if isinstance(node, dict) else None
        if isinstance(value, str) and value.strip() and not value.startswith("hf:"):
            node[parts[-1]] = str(workspace.path(value, key, must_exist=True))  # type: ignore[index]
        elif isinstance(value, dict):  # parallel files
            for side in ("source", "target"):
                if isinstance(value.get(side), str):
                    value[side] = str(workspace.path(value[side], f"{key}.{side}", must_exist=True))
    return raw


def _confine_models(workspace: Workspace, node: Any) -> None:
    """Every model a grader or judge names in ``eval`` (``model``, ``judge_model``), confined like ``model.name``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("model", "judge_model") and isinstance(value, str) and value.strip():
                node[key] = workspace.model_name(value)
            else:
                _confine_models(workspace, value)
    elif isinstance(node, list):
        for item in node:
            _confine_models(workspace, item)


@router.post("/api/new/check")
def check(body: Values, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """The YAML and the CLI's validation of it: ``ok``, or ``problems`` by key."""
    raw = _config(body.values)
    text = _yaml(raw)
    try:
        config_form.check(resolved(ts.workspace, raw))
    except TunesmithError as exc:  # the schema's messages, or a file outside the workspace or missing
        return {"ok": False, "problems": config_form.problems(exc), "message": str(exc), "yaml": text}
    return {"ok": True, "problems": [], "yaml": text}


@router.post("/api/new/estimate")
def estimate(body: Values, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Peak memory and time per epoch, predicted (`tunesmith estimate`); the data are prepared in scratch space."""
    from tunesmith.pipeline.estimate import estimate_run
    from tunesmith.pipeline.run import Run

    raw = resolved(ts.workspace, _config(body.values))
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]
    raw["output"] = {"dir": str(ts.workspace.scratch / "estimate"), "name": digest}
    config = config_form.check(raw)
    run = Run(config)
    run.open()
    return estimate_run(run).to_dict()


@router.post("/api/new/launch")
def launch(body: Values, ts: Studio = Depends(studio)) -> dict[str, Any]:
    """Queue the run as a job; its worker runs `tunesmith run` on it. The run's page follows it."""
    raw = resolved(ts.workspace, _config(body.values))
    config = config_form.check(raw)
    job = create_local_job(ts.store, OWNER, raw, {"name": config.output.name or "run", "source": "studio"})
    return {"job": job["id"], "status": job["status"], "url": f"/runs/view?key={job['id']}"}


class Loaded(BaseModel):
    yaml: str


@router.post("/api/new/load")
def load(body: Loaded) -> dict[str, Any]:
    """A run YAML as the form's values (paths in it are read relative to the workspace, as in the YAML shown)."""
    try:
        raw = yaml.safe_load(body.yaml)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("a run config is a mapping of sections (model, data, task, ...)")
    raw.pop("sweep", None)
    return {"values": config_form.flatten(raw)}


PAGE = Page("new", "New run", router)
