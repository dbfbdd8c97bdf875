"""`tunesmith data audit`: flipped labels ranked first, planted duplicates and outliers reported, clusters flagged."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from tests.helpers.cli import run_cli, run_cli_in_process
from tests.helpers.paths import SST2
from tunesmith.curate.audit import audit, format_text
from tunesmith.data.labelfile import read_label_file

SST2_FILE = SST2 / "train.tsv"
OUTLIER = "SELECT id, email FROM users WHERE created_at > '2021-01-01' ORDER BY id;"
DUPLICATE = "the movie is a total waste of time and money"
COPIES = [DUPLICATE, DUPLICATE + " !", DUPLICATE + " .", DUPLICATE.upper()]  # near, near, exact (case-folded)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def flip(labels: list[str], fraction: float, seed: int, among: int | None = None) -> list[int]:
    """Flip ``fraction`` of the first ``among`` binary labels in place; return the flipped positions."""
    rng = random.Random(seed)
    among = among or len(labels)
    flipped = sorted(rng.sample(range(among), round(fraction * among)))
    for i in flipped:
        labels[i] = "1" if labels[i] == "0" else "0"
    return flipped


def test_audit_logic_on_known_geometry(tmp_path: Path) -> None:
    """Two well-separated classes, a small third topic, an outlier and duplicates: each is found where planted."""
    rng = np.random.default_rng(0)
    centres = np.eye(32)[:3] * 8
    points = [centres[0] + rng.normal(size=32) for _ in range(150)] + [
        centres[1] + rng.normal(size=32) for _ in range(150)
    ]
    labels = ["0"] * 150 + ["1"] * 150
    points += [centres[2] + rng.normal(size=32) * 0.3 for _ in range(4)]  # a topic with 4 rows
    labels += ["0"] * 4
    points.append(-np.ones(32) * 3)  # far from everything
    labels.append("1")
    embeddings = np.array(points)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    flipped = flip(labels, 0.05, seed=1, among=300)
    texts = [f"row {i} " + "abcdefghij"[i % 10] * (i % 7 + 3) for i in range(len(labels))]
    texts[10] = texts[11] = texts[12] = "the same review, copied three times"
    data = read_label_file(
        write_jsonl(tmp_path / "d.jsonl", [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)])
    )

    report = audit(data, embeddings, clusters=5)

    top = report["label_issues"]["ranked_indices"][: len(flipped)]
    assert len(set(top) & set(flipped)) / len(flipped) >= 0.8
    first = report["label_issues"]["rows"][0]
    assert first["suggested"] != first["label"] and first["p_suggested"] > first["p_given"]
    assert [r["index"] for r in report["outliers"]["rows"]][:1] == [len(labels) - 1]
    (group,) = report["duplicates"]["rows"]
    assert group["first"]["index"] == 10 and [c["index"] for c in group["copies"]] == [11, 12]
    assert group["conflicting_labels"] == (len({labels[10], labels[11], labels[12]}) > 1)
    small = [c for c in report["clusters"]["clusters"] if "near-empty" in c["flags"]]
    assert small and all(c["size"] <= 5 for c in small)
    assert sum(c["size"] for c in report["clusters"]["clusters"]) == len(labels)
    text = format_text(report)
    assert "likely label errors" in text and "duplicate groups: 1" in text and "outliers:" in text


def test_label_errors_are_scored_on_each_rows_own_embedding_when_some_rows_are_unlabelled(tmp_path: Path) -> None:
    """Rows without a label (awaiting annotation) are not scored, and do not shift which embedding the labelled
    rows are scored on: flips among the labelled rows are still found."""
    rng = np.random.default_rng(0)
    centres = np.eye(16)[:2] * 6
    unlabelled = [{"text": f"new {i}", "label": None} for i in range(60)]
    labels = ["0"] * 100 + ["1"] * 100
    flipped = flip(labels, 0.05, seed=2)
    points = [centres[1] + rng.normal(size=16) for _ in unlabelled]  # all near class 1
    points += [centres[int(i >= 100)] + rng.normal(size=16) for i in range(200)]
    embeddings = np.array(points)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    rows = unlabelled + [{"text": f"row {i}", "label": y} for i, y in enumerate(labels)]
    data = read_label_file(write_jsonl(tmp_path / "d.jsonl", rows))

    issues = audit(data, embeddings, clusters=2)["label_issues"]

    top = issues["ranked_indices"][: len(flipped)]
    assert all(i >= 60 for i in issues["ranked_indices"])  # only labelled rows are candidates
    assert len(set(top) & {60 + i for i in flipped}) / len(flipped) >= 0.8
    assert issues["oof_accuracy"] >= 0.9


def test_audit_needs_labels_to_find_label_errors(tmp_path: Path) -> None:
    data = read_label_file(write_jsonl(tmp_path / "d.jsonl", [{"text": f"t{i}"} for i in range(12)]))
    report = audit(data, np.random.default_rng(0).normal(size=(12, 8)))
    assert report["label_issues"]["count"] == 0 and "two labels" in report["label_issues"]["note"]


def test_audit_finds_flipped_sst2_labels_planted_duplicates_and_an_outlier(tmp_path: Path) -> None:
    lines = SST2_FILE.read_text(encoding="utf-8").splitlines()[1:1001]
    texts = [line.rsplit("\t", 1)[0].strip() for line in lines]
    labels = [line.rsplit("\t", 1)[1] for line in lines]
    flipped = flip(labels, 0.05, seed=0)
    rows = [{"text": t, "label": y} for t, y in zip(texts, labels, strict=True)]
    rows.insert(500, {"text": OUTLIER, "label": "0"})
    rows += [{"text": c, "label": "0"} for c in COPIES]
    flipped = [i + (i >= 500) for i in flipped]  # positions after the inserted outlier
    data = write_jsonl(tmp_path / "sst2.jsonl", rows)

    result = run_cli(
        "data", "audit", str(data), "--scorer", "embeddings", "--json", "--save", str(tmp_path / "audit.json")
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert json.loads((tmp_path / "audit.json").read_text()) == report

    ranked, n = report["label_issues"]["ranked_indices"], len(flipped)
    recall = {k: len(set(ranked[:k]) & set(flipped)) / n for k in (n, 2 * n, len(ranked))}
    print(f"flipped {n}; recall at {n}: {recall[n]:.2f}, at {2 * n}: {recall[2 * n]:.2f}, "
          f"in all {len(ranked)} flagged: {recall[len(ranked)]:.2f}")  # fmt: skip
    # The quick model (minilm + logistic regression) is right on ~80% of SST-2, so ~20% of flipped rows look
    # consistent with their wrong label to it; measured: 0.42 at n, 0.58 at 2n, 0.71 of flipped rows flagged.
    assert recall[n] >= 0.3 and recall[2 * n] >= 0.5 and recall[len(ranked)] >= 0.6
    assert len(ranked) <= 4 * n  # a list a person can work through, not half the file
    suggestions = {r["index"]: r for r in report["label_issues"]["rows"]}
    for i in set(ranked[: len(flipped)]) & set(flipped):
        if i in suggestions:
            assert suggestions[i]["suggested"] != labels[i - (i > 500)]  # suggests the original label

    groups = report["duplicates"]["rows"]
    planted = next(g for g in groups if g["first"]["text"] == DUPLICATE)
    assert planted["size"] == len(COPIES) and {c["kind"] for c in planted["copies"]} == {"exact", "near"}
    assert 500 in [r["index"] for r in report["outliers"]["rows"]]
    assert report["outliers"]["count"] <= 20  # a short list a person can read, not a tenth of the file
    sizes = [c["size"] for c in report["clusters"]["clusters"]]
    assert sum(sizes) == len(rows) and len(sizes) == report["clusters"]["k"]
    assert all(set(c["labels"]) <= {"0", "1"} and c["examples"] for c in report["clusters"]["clusters"])
    text = format_text(report, top=5)  # what `data audit` prints without --json
    assert "out-of-fold accuracy" in text and f"line {planted['first']['line']} repeated at lines" in text


def test_run_report_shows_the_audit_sections(tmp_path: Path) -> None:
    from tests.helpers.configs import write_tiny_config
    from tunesmith.core.config import load_config
    from tunesmith.core.fs import write_json
    from tunesmith.core.rundir import RunDir
    from tunesmith.pipeline.report import write_report

    rng = np.random.default_rng(1)
    embeddings = np.concatenate(
        [rng.normal(size=(30, 8)) + 6 * np.eye(8)[0], rng.normal(size=(30, 8)) - 6 * np.eye(8)[0]]
    )
    labels = ["pos"] * 30 + ["neg"] * 30
    labels[3] = "neg"
    rows = [{"text": f"review {i}", "label": y} for i, y in enumerate(labels)] + [{"text": "review 7", "label": "neg"}]
    data = read_label_file(write_jsonl(tmp_path / "d.jsonl", rows))
    embeddings = np.concatenate([embeddings, embeddings[7:8]])
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    run_dir.config.write_text(load_config(write_tiny_config(tmp_path, tmp_path)).to_yaml(), encoding="utf-8")
    report = audit(data, embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))
    write_json(run_dir.data / "audit.json", report)
    html = write_report(run_dir).read_text(encoding="utf-8")
    assert 'id="audit"' in html and 'id="audit-label-issues"' in html and 'id="audit-clusters"' in html
    table = html.split('id="audit-label-issues"')[1].split("</table>")[0]
    assert report["label_issues"]["count"] >= 1
    assert all(f'<td class="text">{r["text"]}</td>' in table for r in report["label_issues"]["rows"])
    assert report["duplicates"]["groups"] >= 1 and f"Duplicates: {report['duplicates']['groups']} groups" in html


def test_a_run_with_data_audit_writes_it_and_its_report_shows_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tests.helpers.configs import write_tiny_config
    from tunesmith.pipeline.run import Run

    train = tmp_path / "train.tsv"
    train.write_text("\n".join((SST2 / "train.tsv").read_text(encoding="utf-8").splitlines()[:201]) + "\n")
    data = {"train": str(train), "audit": True, "audit_scorer": "embeddings"}
    config = write_tiny_config(tmp_path, tiny_model_dir, data=data)
    run = Run.from_file(config)
    run.open()
    run.prepare()
    report = json.loads((run.dir.data / "audit.json").read_text())
    assert report["file"] == str(train) and report["rows"] == 200 and report["label_issues"]["method"]
    html = run.report().read_text(encoding="utf-8")
    assert 'id="audit"' in html and 'id="audit-clusters"' in html


def test_audit_of_a_file_without_text_column_names_the_file_and_columns(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"review": "fine", "label": "pos"}, {"review": "bad", "label": "neg"}])
    result = run_cli_in_process("data", "audit", str(data))
    assert result.returncode == 2
    message = result.stdout + result.stderr
    assert str(data) in message and "no text column" in message and "columns: review, label" in message
