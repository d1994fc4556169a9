"""The results of a batch: ``DIR/index.json`` (one record per entry) and ``DIR/index.html`` (a gallery).

Every path in both is relative to ``DIR``, so the folder can be moved or served as it is. Written atomically
(``export.write_text``) after every finished job, so an interrupted batch still has an index of what is done.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from lucid_app.export import write_text
from lucid_app.run_folders import run_files
from lucid_app.run_layout import METRICS_NAME, VIEW_GLOB

INDEX_JSON = "index.json"
INDEX_HTML = "index.html"


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
