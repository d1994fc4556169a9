"""The results of a batch: ``DIR/index.json`` (one record per entry) and ``DIR/index.html`` (a gallery).

Every path in both is relative to ``DIR``, so the folder can be moved or served as it is. Written atomically
(``export.write_text``) after every finished job, so an interrupted batch still has an index of what is done.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid_app.io.files import write_text
from lucid_app.io.run_layout import METRICS_NAME, VIEW_GLOB, run_files

if TYPE_CHECKING:
    from lucid_app.batch.prompts_file import BadLine, BatchEntry

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"
# Statuses of a batch entry in index.json.
STATUSES = ("done", "failed", "stopped", "invalid", "queued")


class BatchIndex:
    """The records of one batch in file order (entries and bad lines by line number), and their index files.

    Args:
        out: the batch's folder; prompts: the prompts file, as the summary names it.
        entries: every valid entry (``queued`` until a result comes); finished: those skipped because their run
            finished earlier (``done``, with the seconds ``earlier`` recorded); invalid: bad lines and unusable
            folders (``invalid``).
        earlier: the records of the folder's previous ``index.json`` by name (:func:`read_index`).
    """

    def __init__(self, out: Path, prompts: str, entries: Sequence[BatchEntry], finished: Sequence[BatchEntry],
                 invalid: Sequence[BadLine], earlier: dict[str, dict[str, Any]]) -> None:
        self.out, self.prompts = out, prompts
        self.records: dict[str, dict[str, Any]] = {}
        order: list[tuple[int, str]] = []
        for entry in entries:
            order.append((entry.line, entry.name))
            self.records[entry.name] = {"name": entry.name, "line": entry.line, "prompt": entry.prompt,
                                        "preset": entry.preset, "run_dir": entry.name, "status": "queued",
                                        "message": "", "seconds": None}
        for entry in finished:
            seconds = earlier.get(entry.name, {}).get("seconds")
            self.records[entry.name].update(status="done", skipped=True, seconds=seconds,
                                            **run_record(out, out / entry.name))
        for line in invalid:
            key = f"line-{line.line}"
            order.append((line.line, key))
            self.records.setdefault(key, {"name": key, "line": line.line, "prompt": line.text})
            self.records[key].update(status="invalid", message=line.message, run_dir=None)
        self.order = [key for _, key in sorted(order)]

    def rows(self) -> list[dict[str, Any]]:
        """The records in file order."""
        return [self.records[key] for key in self.order]

    def summary(self, signal_name: str | None = None) -> dict[str, Any]:
        counts = {status: sum(self.records[k]["status"] == status for k in self.order) for status in STATUSES}
        return {"prompts": self.prompts, "counts": counts, "signal": signal_name}

    def record(self, name: str, run_dir: Path, resumed: bool, result: dict[str, Any]) -> None:
        """Record an entry's result (``run_batch``'s) with what its run folder now holds."""
        record = self.records[name]
        record.update(status=result["status"], message=result.get("message", ""),
                      seconds=round(result.get("seconds", 0.0), 3), step=result.get("step", 0),
                      attempts=result.get("attempts", 1), resumed=resumed, **run_record(self.out, run_dir))
        if result["status"] == "done":
            record["message"] = ""

    def write(self, summary: dict[str, Any] | None = None) -> tuple[Path, Path]:
        """Write ``index.json`` and ``index.html`` (with :meth:`summary` unless given one); returns their paths."""
        return write_index(self.out, self.rows(), summary if summary is not None else self.summary())


def run_record(out: Path, run_dir: Path) -> dict[str, Any]:
    """What a run folder holds, for the index: ``n_gaussians``, ``metrics`` (the last step's record), ``files``
    (name → path relative to ``out``; ``views`` a list)."""
    files: dict[str, Any] = {name: Path(path).relative_to(out).as_posix()
                             for name, path in run_files(run_dir).items()}
    files["views"] = [p.relative_to(out).as_posix() for p in sorted(run_dir.glob(VIEW_GLOB))]
    final = final_metrics(run_dir / METRICS_NAME)
    return {"n_gaussians": final.get("n_gaussians"), "metrics": final, "files": files}


def final_metrics(path: Path) -> dict[str, Any]:
    """The last step record of a ``metrics.jsonl`` ({} when there is none)."""
    if not path.is_file():
        return {}
    last: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "loss_total" in record:
            last = record
    return last


def last_status(path: Path) -> str | None:
    """The end status a ``metrics.jsonl`` records last (``done``, ``stopped``, ``failed``), None if none."""
    if not path.is_file():
        return None
    status = None
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "status" in record:
            status = record["status"]
    return status


def read_index(out: Path) -> dict[str, dict[str, Any]]:
    """An earlier ``index.json``'s records by run folder name ({} when there is none or it is unreadable)."""
    try:
        records = json.loads((out / INDEX_JSON).read_text(encoding="utf-8")).get("runs", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {r["name"]: r for r in records if isinstance(r, dict) and isinstance(r.get("name"), str)}


def write_index(out: Path, records: list[dict[str, Any]], summary: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``index.json`` ({"summary", "runs"}) and ``index.html``; returns their paths."""
    json_path = write_text(out / INDEX_JSON, json.dumps({"summary": summary, "runs": records}, indent=2) + "\n")
    html_path = write_text(out / INDEX_HTML, gallery_html(records, summary))
    return json_path, html_path


def gallery_html(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """A self-contained page: a card per entry with its turntable (or views), status and links to its files."""
    cards = "\n".join(_card(r) for r in records)
    counts = ", ".join(f"{v} {k}" for k, v in summary.get("counts", {}).items() if v)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lucid-app batch</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; background: #fafafa; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1em; }}
.card {{ background: white; border: 1px solid #ddd; border-radius: 6px; padding: .7em; }}
.card video, .card img.main {{ width: 100%; background: white; }}
.views img {{ width: 23%; }}
.status {{ font-weight: bold; }} .done {{ color: #1a7f37; }} .failed, .invalid {{ color: #c62828; }}
.stopped, .queued {{ color: #9a6700; }}
</style></head><body>
<h1>Batch: {html.escape(str(summary.get("prompts", "")))}</h1>
<p>{html.escape(counts)}</p>
<div class="grid">
{cards}
</div></body></html>
"""


def _card(record: dict[str, Any]) -> str:
    e = html.escape
    files = record.get("files") or {}
    views = files.get("views") or []
    if files.get("video"):
        media = f'<video src="{e(files["video"])}" autoplay loop muted playsinline></video>'
    elif views:
        media = f'<img class="main" src="{e(views[0])}" alt="view">'
    else:
        media = ""
    thumbs = "".join(f'<img src="{e(v)}" alt="view">' for v in views[1:5])
    links = " · ".join(f'<a href="{e(files[k])}">{label}</a>'
                       for k, label in (("ply", ".ply"), ("video", ".mp4"), ("mesh", ".glb"), ("config", "config"),
                                        ("metrics", "metrics")) if files.get(k))
    status = str(record.get("status", ""))
    seconds = record.get("seconds")
    facts = [f"line {record.get('line')}"]
    if seconds is not None:
        facts.append(f"{seconds:.0f} s")
    if record.get("n_gaussians") is not None:
        facts.append(f"{record['n_gaussians']} Gaussians")
    message = f'<div>{e(str(record["message"]))}</div>' if record.get("message") else ""
    return (f'<div class="card">{media}<div class="views">{thumbs}</div>'
            f'<div><b>{e(str(record.get("prompt", "")))}</b></div>'
            f'<div class="status {e(status)}">{e(status)}</div><div>{e(", ".join(facts))}</div>{message}'
            f'<div>{links}</div></div>')


__all__ = ["INDEX_HTML", "INDEX_JSON", "final_metrics", "gallery_html", "last_status", "read_index", "run_record",
           "write_index"]
