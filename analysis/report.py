"""``cvae analysis report``: one self-contained HTML page (figures, GIFs and styles embedded)."""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml
from cvae.analysis.load import SweepData
from cvae.analysis.numbers import number
from cvae.analysis.table import EVAL_NOTE, NO_DROP_DB, config_table, eval_cells, fmt_ci

CSS = """
:root { --fg: #1d232a; --muted: #5b6670; --line: #e3e7eb; --accent: #2f6fdf; --bg: #fbfcfd; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 32px 28px 64px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 24px; padding-bottom: 12px; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); font-size: 13px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 130px; }
.card b { display: block; font-size: 22px; }
.card span { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 10px; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; font-weight: 600; white-space: normal; }
.table-wrap { overflow-x: auto; }
td:first-child, th:first-child { text-align: left; white-space: normal; }
tr.best td { background: #eef8f0; font-weight: 600; }
figure { margin: 0 0 28px; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 8px; }
figcaption b { color: var(--fg); }
.rollouts { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: 16px; }
.rollouts img { image-rendering: pixelated; width: 100%; border-radius: 4px; }
pre { background: #f3f5f7; border: 1px solid var(--line); border-radius: 6px; padding: 12px; overflow-x: auto;
      font-size: 12.5px; }
details summary { cursor: pointer; color: var(--accent); }
"""


def _b64(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _table_html(data: SweepData, table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>No runs to tabulate.</p>"
    field = data.metric_field
    unit = " dB" if field.endswith("psnr") else ""
    head = ["configuration", "runs", f"final {data.metric}", f"best {data.metric}", "margin over copy-first",
            "best epoch", "time", "complete", "pruned", "failed", "running"]
    rows = []
    for i, r in table.iterrows():
        margin = "-" if math.isnan(r.margin) else ("+" if r.margin >= 0 else "") + fmt_ci(r.margin, r.margin_ci95, " dB")
        cells = [html.escape(str(r.configuration)), str(r.runs),
                 fmt_ci(r[f"final_{field}"], r[f"final_{field}_ci95"], unit),
                 fmt_ci(r[f"best_{field}"], r[f"best_{field}_ci95"], unit), margin,
                 "-" if math.isnan(r.best_epoch) else number(r.best_epoch),
                 "-" if math.isnan(r.train_time_s) else f"{r.train_time_s:.0f} s",
                 str(r.complete), str(r.pruned), str(r.failed), str(r.running)]
        cls = ' class="best"' if i == 0 else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return _html_table(head, rows)


def _html_table(head: list[str], rows: list[str], table_id: str = "") -> str:
    ident = f' id="{table_id}"' if table_id else ""
    return (f'<div class="table-wrap"><table{ident}><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _uses_html(table: pd.DataFrame) -> str:
    """The evaluation's columns (:data:`~.table.EVAL_MEASURES`) per configuration, with what they mean; nothing
    when the records lack them."""
    if table.empty or not eval_cells(table, table.iloc[0]):
        return ""
    head = ["configuration", *(h for h, _ in eval_cells(table, table.iloc[0]))]
    rows = ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>"
                             for c in [r.configuration, *(t for _, t in eval_cells(table, r))]) + "</tr>"
            for _, r in table.iterrows()]
    return (f"<h3>What each configuration uses</h3>{_html_table(head, rows, 'uses-table')}"
            f'<p class="meta">{html.escape(EVAL_NOTE)} Mean ± 95% confidence interval over replicates.</p>')


def baseline_sentence(table: pd.DataFrame) -> str:
    """How many configurations beat copying the first frame, in one sentence (empty without baselines)."""
    if table.empty or "margin" not in table or table.margin.isna().all():
        return ""
    known = table[table.margin.notna()]
    beat = known[known.margin > 0]
    copy_first = known.copy_first.mean()
    where = f"copying the first frame ({copy_first:.2f} dB on the validation video)"
    n, m = len(beat), len(known)
    if n == 0:
        return (f"None of the {m} configurations beats {where} at its best epoch (best margin "
                f"{known.margin.max():+.2f} dB): these models have not learned to predict the video, and the "
                "comparisons below compare untrained models.")
    top = known.loc[known.margin.idxmax()]
    return (f"{n} of {m} configuration{'s' if m != 1 else ''} beat{'s' if n == 1 else ''} {where} at "
            f"{'its' if n == 1 else 'their'} best epoch (mean over replicates); the widest margin is "
            f"{top.margin:+.2f} dB ({top.configuration}).")


def _names(labels: pd.Series) -> str:
    """``: a, b`` for up to three configurations, nothing for more."""
    return f": {', '.join(str(x) for x in labels)}" if 0 < len(labels) <= 3 else ""


def uses_sentence(table: pd.DataFrame) -> str:
    """How many configurations ignore their latent (0 active units at the value's epoch, mean over replicates) and
    how many do not use their previous frame (no PSNR drop without it), in one sentence; empty when the records
    lack both diagnostics."""
    parts = []
    if "active_units" in table and table.active_units.notna().any():
        known = table[table.active_units.notna()]
        idle = known[known.active_units == 0]
        parts.append(f"{len(idle)} of {len(known)} configuration{'s' if len(known) != 1 else ''} "
                     f"ignore{'s' if len(idle) == 1 else ''} {'its' if len(idle) == 1 else 'their'} latent "
                     f"(0 active units at the epoch of the value, mean over replicates: posterior collapse)"
                     f"{_names(idle.configuration)}")
    if "no_prev_change" in table and table.no_prev_change.notna().any():
        known = table[table.no_prev_change.notna()]
        unused = known[known.no_prev_change >= -NO_DROP_DB]
        parts.append(f"{len(unused)} of {len(known)} do{'es' if len(unused) == 1 else ''} not use "
                     f"{'its' if len(unused) == 1 else 'their'} previous frame (no PSNR drop without it: the "
                     f"rollout with the clip's first frame at every step scores within {NO_DROP_DB} dB of, or above, "
                     f"the normal one){_names(unused.configuration)}")
    return "; ".join(parts) + "." if parts else ""


def _rollouts(data: SweepData, table: pd.DataFrame) -> str:
    """The sample GIFs of the best and the worst configuration's best run, when the records have them."""
    if table.empty or "run_dir" not in data.runs:
        return "<p>No sample rollouts in these records.</p>"
    picks = [("best", table.iloc[0].configuration)]
    if len(table) > 1:
        picks.append(("worst", table.iloc[-1].configuration))
    cells = []
    for kind, label in picks:
        group = data.runs[(data.runs.label == label) & data.runs.value.notna()]
        if group.empty:
            continue
        row = group.loc[group.value.idxmax() if data.goal == "maximize" else group.value.idxmin()]
        gif = Path(str(row.run_dir)) / "sample.gif" if isinstance(row.run_dir, str) else None
        if gif is None or not gif.is_file():
            continue
        cells.append(
            f'<figure><img alt="{kind} rollout" src="{_b64(gif.read_bytes(), "image/gif")}">'
            f"<figcaption><b>{kind.capitalize()} configuration:</b> {html.escape(str(label))} "
            f"(run {html.escape(str(row.run))}, {data.metric} {row.value:.2f}). The validation rollout of the "
            f"run's last epoch: every frame after the first is predicted.</figcaption></figure>"
        )
    if not cells:
        return "<p>No sample rollouts in these records.</p>"
    return f'<div class="rollouts">{"".join(cells)}</div>'


def _not_drawn_html(reasons: dict[str, str]) -> str:
    """The figures left out, each with why (``param_importances: importances need at least 4 ...``)."""
    if not reasons:
        return ""
    items = "".join(f"<li><b>{html.escape(name)}</b>: {html.escape(why)}.</li>" for name, why in reasons.items())
    return f'<div id="not-drawn" class="meta"><p>Not drawn:</p><ul>{items}</ul></div>'


def build_report(data: SweepData, out: str | Path, *, only=None) -> Path:
    """Write the report to ``out`` and return its path.

    Sections: the sweep's summary, its spec, the configuration table, every applicable figure with its
    caption, and sample rollouts of the best and worst configurations.
    """
    from cvae.analysis.figures import not_drawn, render_all

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = config_table(data)
    with tempfile.TemporaryDirectory() as tmp:
        rendered = render_all(data, Path(tmp), only=only)
        figures = []
        for result, png, _svg in rendered:
            figures.append(
                f'<figure id="{result.name}"><img alt="{html.escape(result.title)}" '
                f'src="{_b64(Path(png).read_bytes(), "image/png")}"><figcaption><b>{html.escape(result.title)}.'
                f"</b> {html.escape(result.caption)}</figcaption></figure>"
            )
    counts = data.runs.state.value_counts().to_dict()
    best = ""
    if not table.empty:
        field = data.metric_field
        unit = " dB" if field.endswith("psnr") else ""
        best = (f'<div class="card" id="best-configuration"><span>best configuration</span>'
                f'<b>{html.escape(str(table.iloc[0].configuration))}</b>{html.escape(data.metric)} '
                f'{fmt_ci(table.iloc[0][f"best_{field}"], table.iloc[0][f"best_{field}_ci95"], unit)}</div>')
    cards = "".join(
        f'<div class="card"><span>{k}</span><b>{v}</b></div>'
        for k, v in [("runs", len(data.runs)), *((s, counts.get(s, 0)) for s in ("complete", "pruned", "failed", "running"))]
    ) + best
    spec_text = yaml.safe_dump(data.spec, sort_keys=False) if data.spec else "(no spec.yaml in the records)"
    buf = io.StringIO()
    buf.write(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(data.name)}: sweep report</title><style>{CSS}</style></head>
<body><main>
<header><h1>Sweep report: {html.escape(data.name)}</h1>
<div class="meta">{html.escape(data.source)} · metric {html.escape(data.metric)} ({data.goal}) ·
swept: {html.escape(", ".join(data.params) or "nothing")} · generated
{datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}</div></header>
<div class="cards">{cards}</div>
<h2>Configurations</h2>
<p class="meta">One row per configuration; final = the metric at each run's last epoch, best = at its best
epoch; mean ± 95% confidence interval over replicates (t distribution); margin = validation PSNR at the best
epoch minus copying the first frame of each validation clip. Sorted best first.</p>
{f'<p id="baselines">{html.escape(baseline_sentence(table))}</p>' if baseline_sentence(table) else ""}
{f'<p id="uses">{html.escape(uses_sentence(table))}</p>' if uses_sentence(table) else ""}
{_table_html(data, table)}
{_uses_html(table)}
<h2>Figures</h2>
{"".join(figures) or "<p>No figure applies to these runs.</p>"}
{_not_drawn_html(not_drawn(data) if only is None else {})}
<h2>Sample rollouts</h2>
{_rollouts(data, table)}
<h2>Spec</h2>
<details open><summary>the sweep's YAML</summary><pre>{html.escape(spec_text)}</pre></details>
</main></body></html>
""")
    out.write_text(buf.getvalue())
    return out
