"""HTML of the pages. Every value from the DB or a file is escaped; links are relative to
the page, so the pages work under any Airflow base URL and inside the UI's iframe."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote

from imagenet_airflow.ui import data
from imagenet_beam.layout import LINEAGE_FILE

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:16px;color:#1a202c;
  font-size:14px}
h1{font-size:20px;margin:0 0 12px} h2{font-size:16px;margin:20px 0 8px}
h3{font-size:14px;margin:14px 0 6px}
table{border-collapse:collapse;margin:4px 0 8px} th,td{border:1px solid #e2e8f0;padding:4px 8px;
  text-align:left;vertical-align:top} th{background:#f7fafc;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.section{border:1px solid #e2e8f0;border-radius:6px;padding:10px 14px;margin:0 0 14px}
.muted{color:#718096} .ok{color:#276749} .warn{color:#9c4221} .bad{color:#c53030}
img.report{max-width:100%;border:1px solid #e2e8f0}
details summary{cursor:pointer}
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else escape(str(n))


def size(n: Any) -> str:
    if not isinstance(n, int):
        return escape(str(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return str(n)


def when(ts: Any) -> str:
    return escape(ts.strftime("%Y-%m-%d %H:%M:%S UTC") if hasattr(ts, "strftime") else str(ts))


def run_link(run_id: str | None, tab: bool = True) -> str:
    """A link to the run in the Airflow UI (its dataset tab), opened in the whole window."""
    if not run_id:
        return "<span class='muted'>(no run)</span>"
    href = f"../dags/{quote(data.DAG_ID)}/runs/{quote(run_id, safe='')}"
    if tab:
        href += "/plugin/imagenet-dataset"
    return f"<a target='_top' href='{escape(href)}' class='mono'>{escape(run_id)}</a>"


def file_href(event_id: int, name: str) -> str:
    return f"events/{event_id}/files/{quote(name)}"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rows_cell(cell: str) -> str:
    # cells are pre-escaped HTML; numbers are right-aligned
    if cell.startswith("<num>"):
        return f"<td class='num'>{cell[5:]}</td>"
    return f"<td>{cell}</td>"


def report_block(state: data.VersionState, event_id: int) -> str:
    """The version's report inline: the picture, and a link to the HTML; or "no report"."""
    parts = []
    if state.report_html:
        parts.append(f"<p><a id='report-html' target='_blank' "
                     f"href='{file_href(event_id, data.REPORT_HTML)}'>Open report.html</a></p>")
    if state.report_image:
        parts.append(f"<img id='report-image' class='report' alt='report' "
                     f"src='{file_href(event_id, data.REPORT_IMAGE)}'>")
    if not parts:
        return "<p id='no-report' class='muted'>no report</p>"
    return "".join(parts)


def split_counts(splits: Iterable[data.SplitEvent]) -> str:
    rows = []
    for s in sorted(splits, key=lambda s: s.split):
        e = s.extra
        rows.append([
            f"<span class='split'>{escape(s.split)}</span>",
            f"<num><span class='examples' data-split='{escape(s.split)}'>"
            f"{num(e.get('num_examples'))}</span>",
            f"<num>{num(e.get('full_imagenet_examples'))}",
            f"<num>{num(e.get('num_shards'))}",
            f"<num>{size(e.get('num_bytes'))}",
        ])
    return table(["split", "examples", "full ILSVRC 2012", "shards", "bytes"], rows)


def converted(pub: data.Publication) -> str:
    if pub.reprocessed:
        return "<span class='ok'>converted</span>"
    return "<span class='muted'>found up to date</span>"


# --- the nav page ------------------------------------------------------------------------

def versions_page(pubs: list[data.Publication], states: Mapping[str, data.VersionState]) -> str:
    if not pubs:
        return page("ImageNet datasets", "<p id='no-versions'>No published version yet: no run "
                    f"of the <code>{data.DAG_ID}</code> DAG has recorded one.</p>")
    by_dir: dict[str, list[data.Publication]] = {}
    for pub in pubs:  # newest first
        by_dir.setdefault(pub.version_dir, []).append(pub)
    sections = []
    for version_dir, history in by_dir.items():
        state = states[version_dir]
        latest = history[0]
        if state.problem:
            now = f"<p class='bad'>{escape(state.problem)}</p>"
        else:
            made_by = (state.lineage.airflow or {}).get("run_id")
            now = (f"<p>Published now: <b>{escape(latest.file_format or '?')}</b>, made by run "
                   f"{run_link(made_by)}</p>" + report_block(state, latest.event_id))
        rows = [[
            when(p.timestamp),
            run_link(p.run_id),
            converted(p),
            escape(p.file_format or "?"),
            split_counts(p.splits),
        ] for p in history]
        sections.append(
            f"<div class='section version' data-version-dir='{escape(version_dir)}'>"
            f"<h2 class='mono'>{escape(version_dir)}</h2>{now}"
            "<h3>Publications recorded by Airflow</h3>"
            + table(["when", "run", "conversion", "format", "splits"], rows)
            + "</div>"
        )
    intro = (f"<p class='muted'>Every version of <code>{data.DAG_ID}</code> this Airflow has "
             "recorded (the DAG's split Asset events), newest first, grouped by location.</p>")
    return page("ImageNet datasets", intro + "".join(sections))


# --- the run tab -------------------------------------------------------------------------

def message_page(title: str, text: str) -> str:
    return page(title, f"<p id='message'>{text}</p>")


def _generic_rows(items: list[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    keys: list[str] = []
    for item in items:
        keys += [k for k in item if k not in keys]
    return keys, [[escape(str(item.get(k, ""))) for k in keys] for item in items]


def run_page(run, pub: data.Publication | None, state: data.VersionState | None) -> str:
    title = f"Dataset of run {run.run_id}"
    head = (f"<p>Run {run_link(run.run_id, tab=False)} &middot; state "
            f"<b id='run-state'>{escape(str(run.state))}</b></p>")
    if pub is None:
        return page(title, head + "<p id='no-dataset'>This run has not recorded a dataset "
                    "(validate_and_record records one when the run publishes).</p>")
    head += (f"<p>Location <code id='version-dir'>{escape(pub.version_dir)}</code> &middot; "
             f"format <b>{escape(pub.file_format or '?')}</b> &middot; {converted(pub)} "
             f"&middot; recorded {when(pub.timestamp)}</p>")
    body = [head, "<h2>Splits</h2>", split_counts(pub.splits)]
    if state.problem:
        body.append(f"<p class='bad'>The version {escape(state.problem)}.</p>")
        return page(title, "".join(body))
    lineage = state.lineage
    made_by = (lineage.airflow or {}).get("run_id")
    if not data.still_there(pub, lineage):
        body.append(
            f"<p id='replaced' class='warn'>The files at this location have been replaced "
            f"since: they are now those of run {run_link(made_by)}; open its tab for their "
            "lineage and report.</p>")
        return page(title, "".join(body))
    if made_by != run.run_id:
        body.append(f"<p id='made-by'>This run found the version up to date; its files and "
                    f"lineage.json were made by run {run_link(made_by)}.</p>")

    body.append("<h2>Report</h2>" + report_block(state, pub.event_id))

    body.append("<h2>Shards</h2>")
    for split, info in sorted(lineage.splits.items()):
        rows = [[f"<span class='mono'>{escape(s.file)}</span>", f"<num>{num(s.num_examples)}",
                 f"<num>{size(s.num_bytes)}", f"<span class='mono'>{escape(s.sha256)}</span>"]
                for s in info.shards]
        body.append(
            f"<details class='shards' data-split='{escape(split)}'><summary>{escape(split)}: "
            f"<span class='lineage-examples' data-split='{escape(split)}'>"
            f"{num(info.num_examples)}</span> examples in {num(info.num_shards)} "
            f"shard{'' if info.num_shards == 1 else 's'}, "
            f"{size(info.num_bytes)}</summary>"
            + table(["file", "examples", "bytes", "sha256"], rows) + "</details>")

    body.append("<h2>Archives</h2>")
    rows = []
    for a in lineage.archives:
        matched = ("<span class='ok'>matched the published checksum</span>"
                   if a.get("verified_against") else
                   "<span class='muted'>not checked against published values</span>")
        rows.append([escape(str(a.get("name", ""))), f"<num>{size(a.get('size'))}",
                     f"<span class='mono'>{escape(str(a.get('sha256', '')))}</span>", matched])
    body.append(table(["archive", "size", "sha256", "published checksum"], rows)
                if rows else "<p class='muted'>none recorded</p>")

    body.append("<h2>Test patch</h2>")
    patch = lineage.test_patch
    if not patch:
        body.append("<p class='muted'>not merged in this run</p>")
    else:
        rows = [[escape(k), escape(", ".join(map(str, v)) if isinstance(v, list) else str(v))]
                for k, v in sorted(patch.items())]
        body.append(table(["", ""], rows))

    for heading, items in (("Fixed images", lineage.fixed_images),
                           ("Skipped images", lineage.skipped_images)):
        body.append(f"<h2>{heading} ({len(items)})</h2>")
        if items:
            keys, rows = _generic_rows(items)
            body.append(table(keys, rows))
        else:
            body.append("<p class='muted'>none</p>")

    body.append(f"<h2>Warnings ({len(lineage.warnings)})</h2>")
    body.append("<ul>" + "".join(f"<li class='warn'>{escape(w)}</li>" for w in lineage.warnings)
                + "</ul>" if lineage.warnings else "<p class='muted'>none</p>")
    if LINEAGE_FILE in state.files:
        body.append(f"<p><a href='{file_href(pub.event_id, LINEAGE_FILE)}' "
                    "target='_blank'>lineage.json</a></p>")
    return page(title, "".join(body))
