"""``tunesmith data audit``: what in a labelled data file needs a person's attention.

- likely label errors: out-of-fold class probabilities (``audit_scorers``: frozen sentence embeddings + logistic
  regression by default, or an encoder with a classification head fine-tuned per fold, or a trained run's classifier)
  fed to confident learning (cleanlab), ranked, each with the label the evidence suggests;
- coverage: embedding clusters (k-means) with sizes, example rows and class balance; near-empty and
  over-represented clusters; outliers (cleanlab's k-nearest-neighbour out-of-distribution score);
- duplicates (exact and near, from the data pipeline's dedup), flagged when copies disagree on the label.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.curate.audit_scorers import (
    SCORERS,
    FineTune,
    Scorer,
    averaged_scorer,
    embedding_scorer,
    finetune_scorer,
    stacked_scorer,
)
from tunesmith.data.dedup import find_duplicates
from tunesmith.data.labelfile import LabelFile, read_label_file

EXCERPT = 160
MAX_ISSUES = 50  # rows listed per section; the counts cover all of them
OUTLIER_Z = 2.5  # robust z-score (median / MAD) of the out-of-distribution score beyond which a row is an outlier


def audit_file(
    path: str | Path,
    text_column: str | None = None,
    label_column: str = "label",
    model: str = "minilm-l6",
    folds: int = 5,
    clusters: int | None = None,
    seed: int = 0,
    scorer: str | Scorer | Sequence[Scorer] = "embeddings",
    stack: bool = False,
) -> dict[str, Any]:
    """Read a file, embed its texts and audit them (see ``audit``); ``scorer``: how label errors are scored
    (``finetune``, ``embeddings``, or one or more ``Scorer``s, e.g. trained runs'); ``stack``: refit their
    probabilities on the file's own labels together with the embeddings (``stacked_scorer``), else several
    scorers' probabilities are averaged."""
    from tunesmith.models.embed import embed_texts

    if isinstance(scorer, str) and scorer not in SCORERS:
        raise ValueError(f"unknown audit scorer {scorer!r}; expected one of {', '.join(SCORERS)}")
    data = read_label_file(path, text_column, label_column)
    embeddings = embed_texts(data.texts(), model)
    if scorer == "finetune":
        bases = [finetune_scorer(FineTune(model=model))]
    elif scorer == "embeddings":
        bases = [embedding_scorer(embeddings, model)]
    else:
        bases = [scorer] if callable(scorer) else list(scorer)
    if stack:
        chosen = stacked_scorer(bases, embeddings, model)
    else:
        chosen = bases[0] if len(bases) == 1 else averaged_scorer(bases)
    report = audit(data, embeddings, folds=folds, clusters=clusters, seed=seed, scorer=chosen)
    report["embedding_model"] = model
    return report


def audit(
    data: LabelFile,
    embeddings: np.ndarray,
    folds: int = 5,
    clusters: int | None = None,
    seed: int = 0,
    scorer: Scorer | None = None,
) -> dict[str, Any]:
    """The audit of rows already read and embedded (one unit vector per row of ``data.items``); label errors are
    scored by ``scorer`` (default: logistic regression on these embeddings)."""
    labels = [item.label(data.label_column) for item in data.items]
    counts = Counter(label for label in labels if label is not None)
    return {
        "file": str(data.path),
        "rows": len(data.items),
        "labelled": sum(counts.values()),
        "label_counts": dict(counts.most_common()),
        "unreadable": {
            "count": len(data.rejects),
            "rows": [r.to_dict() for r in data.rejects[:MAX_ISSUES]],
        },
        "label_issues": label_issues(data, scorer or embedding_scorer(embeddings), labels, folds, seed),
        "clusters": cluster_report(data, embeddings, labels, clusters, seed),
        "outliers": outliers(data, embeddings),
        "duplicates": duplicates(data, labels),
    }


def _row(data: LabelFile, index: int) -> dict[str, Any]:
    item = data.items[index]
    text = data.text(item)
    return {
        "index": index,
        "line": item.line,
        "text": text if len(text) <= EXCERPT else text[: EXCERPT - 3] + "...",
        "label": item.label(data.label_column),
    }


def label_issues(
    data: LabelFile, scorer: Scorer, labels: Sequence[str | None], folds: int, seed: int
) -> dict[str, Any]:
    """Rows whose label the scorer's probabilities doubt, ranked by cleanlab (most likely wrong first)."""
    from cleanlab.filter import find_label_issues

    known = [i for i, label in enumerate(labels) if label is not None]
    classes = sorted({labels[i] for i in known})
    per_class = Counter(labels[i] for i in known)
    k = min(folds, min(per_class.values())) if per_class else 0
    if len(classes) < 2 or k < 2:
        note = "needs at least two labels with two labelled rows each"
        return {"method": None, "note": note, "count": 0, "rows": []}
    y = np.array([classes.index(labels[i]) for i in known])
    scores = scorer([data.text(data.items[i]) for i in known], np.array(known, dtype=int), y, classes, k, seed)
    probs = scores.probs
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    rows = []
    for j in ranked:
        row = _row(data, known[j])
        suggested = int(np.argmax(probs[j]))
        row |= {
            "suggested": classes[suggested],
            "p_given": round(float(probs[j, y[j]]), 4),
            "p_suggested": round(float(probs[j, suggested]), 4),
        }
        rows.append(row)
    return {
        "method": f"{scores.method}; ranked by cleanlab (self-confidence)",
        "scorer": scores.scorer,
        "scorer_model": scores.model,
        "out_of_fold": scores.out_of_fold,
        "oof_accuracy": round(float((probs.argmax(1) == y).mean()), 4),
        "count": len(rows),
        "rows": rows,
        "ranked_indices": [known[j] for j in ranked],  # all of them, for tools that order rows (the studio)
    }


def cluster_report(
    data: LabelFile, embeddings: np.ndarray, labels: Sequence[str | None], k: int | None, seed: int
) -> dict[str, Any]:
    """k-means clusters of the embeddings: size, examples nearest the centre, class balance, and flags."""
    from sklearn.cluster import KMeans

    n = len(embeddings)
    k = k or max(2, min(30, round(math.sqrt(n / 2))))
    k = min(k, n)
    if k < 2:
        return {"k": k, "clusters": [], "note": "too few rows to cluster"}
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(embeddings)
    expected = n / k
    out = []
    for c in range(k):
        members = np.flatnonzero(model.labels_ == c)
        distance = np.linalg.norm(embeddings[members] - model.cluster_centers_[c], axis=1)
        balance = Counter(labels[i] for i in members if labels[i] is not None)
        flags = []
        if len(members) <= max(1.0, 0.25 * expected):
            flags.append("near-empty")
        if len(members) >= 2.5 * expected:
            flags.append("over-represented")
        out.append(
            {
                "cluster": c,
                "size": len(members),
                "share": round(len(members) / n, 4),
                "labels": dict(balance.most_common()),
                "examples": [_row(data, int(i)) for i in members[np.argsort(distance)[:3]]],
                "flags": flags,
            }
        )
    out.sort(key=lambda c: -c["size"])
    return {"k": k, "expected_size": round(expected, 1), "clusters": out}


def outliers(data: LabelFile, embeddings: np.ndarray) -> dict[str, Any]:
    """Rows far from their nearest neighbours (cleanlab's kNN out-of-distribution score; robust z > OUTLIER_Z)."""
    from cleanlab.outlier import OutOfDistribution

    n = len(embeddings)
    if n < 10:
        return {"count": 0, "rows": [], "note": "too few rows to judge outliers"}
    ood = OutOfDistribution(params={"k": min(10, n - 1)})
    scores = ood.fit_score(features=embeddings, verbose=False)  # 1 = typical, towards 0 = unusual
    distance = 1 - scores
    median = np.median(distance)
    mad = np.median(np.abs(distance - median)) * 1.4826 or 1e-9
    z = (distance - median) / mad
    picked = [int(i) for i in np.argsort(-z) if z[i] > OUTLIER_Z]
    rows = [_row(data, i) | {"score": round(float(scores[i]), 4), "z": round(float(z[i]), 1)} for i in picked]
    return {"count": len(rows), "threshold_z": OUTLIER_Z, "rows": rows[:MAX_ISSUES]}


def duplicates(data: LabelFile, labels: Sequence[str | None]) -> dict[str, Any]:
    """Groups of exact and near duplicate texts (the pipeline's dedup), largest first."""
    groups: dict[int, list[Any]] = defaultdict(list)
    for match in find_duplicates(data.texts()):
        groups[match.of].append(match)
    out = []
    for first, matches in groups.items():
        copies = [_row(data, m.index) | {"kind": m.kind, "similarity": round(m.similarity, 3)} for m in matches]
        members = [first, *(m.index for m in matches)]
        found = {labels[i] for i in members if labels[i] is not None}
        out.append(
            {
                "first": _row(data, first),
                "copies": copies,
                "size": len(members),
                "conflicting_labels": len(found) > 1,
            }
        )
    out.sort(key=lambda g: (-g["size"], g["first"]["index"]))
    return {
        "groups": len(out),
        "rows_repeated": sum(g["size"] - 1 for g in out),
        "conflicting": sum(g["conflicting_labels"] for g in out),
        "rows": out[:MAX_ISSUES],
    }


def format_text(report: dict[str, Any], top: int = 15) -> str:
    """The audit as plain text for a terminal: the sections a person acts on, most urgent first."""
    lines = [
        f"audit of {report['file']}: {report['rows']} rows, {report['labelled']} labelled "
        f"({', '.join(f'{k}: {v}' for k, v in report['label_counts'].items()) or 'none'})"
    ]
    bad = report["unreadable"]
    if bad["count"]:
        lines.append(f"\nunreadable rows: {bad['count']}")
        lines += [f"  {r['source']}: {r['reason']}" for r in bad["rows"][:top]]
    issues = report["label_issues"]
    lines.append(f"\nlikely label errors: {issues['count']}" + (f" ({issues['method']})" if issues["method"] else ""))
    if issues.get("note"):
        lines.append(f"  {issues['note']}")
    if "oof_accuracy" in issues:
        held = issues.get("scorer") == "run"  # a separate model: held out, not cross-validated
        kind = ("held-out" if held else "out-of-fold") if issues.get("out_of_fold", True) else "not held-out"
        model = f"; model: {issues['scorer_model']}" if issues.get("scorer_model") else ""
        lines.append(
            f"  scorer {issues.get('scorer', 'embeddings')}: {kind} accuracy {issues['oof_accuracy']:.1%} against "
            f"the labels given{model}"
        )
    for r in issues["rows"][:top]:
        lines.append(
            f"  line {r['line']}: {r['label']} -> suggested {r['suggested']} "
            f"(p={r['p_suggested']:.2f}, given p={r['p_given']:.2f})  {r['text']}"
        )
    clusters = report["clusters"]
    lines.append(f"\nclusters: {clusters['k']} (k-means; expected size {clusters.get('expected_size', '-')})")
    for c in clusters["clusters"]:
        flags = f" [{', '.join(c['flags'])}]" if c["flags"] else ""
        balance = ", ".join(f"{k}: {v}" for k, v in c["labels"].items()) or "unlabelled"
        lines.append(f"  #{c['cluster']}: {c['size']} rows ({c['share']:.1%}){flags}; labels {balance}")
        lines += [f"      line {e['line']}: {e['text']}" for e in c["examples"][:2]]
    out = report["outliers"]
    lines.append(f"\noutliers: {out['count']}")
    lines += [f"  line {r['line']} (z={r['z']}): {r['text']}" for r in out["rows"][:top]]
    dup = report["duplicates"]
    lines.append(
        f"\nduplicate groups: {dup['groups']} ({dup['rows_repeated']} repeated rows, "
        f"{dup['conflicting']} with conflicting labels)"
    )
    for g in dup["rows"][:top]:
        lines_of = ", ".join(str(c["line"]) for c in g["copies"])
        warn = "  CONFLICTING LABELS" if g["conflicting_labels"] else ""
        lines.append(f"  line {g['first']['line']} repeated at lines {lines_of}{warn}: {g['first']['text']}")
    return "\n".join(lines)
