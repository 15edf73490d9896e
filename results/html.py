"""A single self-contained HTML page: sortable leaderboard, judge comparisons and plots.

Everything is inline (CSS, JS, PNGs as data URIs) so the file can be mailed, attached to CI runs or
opened from disk with no server and no network. ``#selftest`` in the URL makes the page sort itself
and record the outcome in ``<body data-selftest>``, which the headless-Chromium test reads.
"""

from __future__ import annotations

import base64
import math
from datetime import datetime, timezone
from html import escape
from pathlib import Path

import pandas as pd

from llamavid_eval.results.agreement import JudgePair, flat_stats, interval_method, side_by_side
from llamavid_eval.results.table import Leaderboard, format_cell, format_value, interval_notes, short_source_text

_MAX_ITEMS = 300  # side-by-side rows per judge pair; the CSV has them all

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#1d1d1f;background:#fff}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:1.6rem 0 .5rem}h3{font-size:1rem}
.meta{color:#666;font-size:.85rem}.layout{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}
.tablebox{flex:1 1 640px;min-width:0;overflow-x:auto}.plots{flex:1 1 380px;max-width:720px}
table{border-collapse:collapse;font-size:.82rem}th,td{border:1px solid #ddd;padding:.25rem .45rem;white-space:nowrap}
th{background:#f2f4f7;position:sticky;top:0;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}td.missing{color:#aaa;text-align:center}
tr.reported td{background:#fff8e6;font-style:italic}.badge{font-size:.72rem;padding:0 .35rem;border-radius:.6rem}
.badge.reported{background:#f5c451}.badge.measured{background:#9fd8a6}
figure{margin:0 0 1.2rem}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8rem;color:#555}
input#filter{margin:.5rem 0;padding:.3rem .5rem;width:18rem}.notes{white-space:normal;min-width:14rem;font-size:.75rem}
details{margin:.5rem 0}.agree-False td{background:#fdecea}
"""

_JS = """
(function(){
  var errors=[];window.addEventListener('error',function(e){errors.push(String(e.message));document.body.dataset.jsErrors=errors.join(' | ');});
  function key(td,num){var v=td.getAttribute('data-v');if(v===null||v===''){return null;}return num?parseFloat(v):v.toLowerCase();}
  function sortTable(table,col,dir){
    var th=table.tHead.rows[0].cells[col],num=th.dataset.type==='num',body=table.tBodies[0];
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=key(a.cells[col],num),y=key(b.cells[col],num);
      if(x===null&&y===null){return 0;}if(x===null){return 1;}if(y===null){return -1;}
      return (x<y?-1:x>y?1:0)*(dir==='asc'?1:-1);});
    rows.forEach(function(r){body.appendChild(r);});
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(c){c.classList.remove('sorted-asc','sorted-desc');});
    th.classList.add('sorted-'+dir);th.dataset.dir=dir;
  }
  function firstDir(th){return th.dataset.type==='num'&&th.dataset.hib!=='false'?'desc':'asc';}
  document.querySelectorAll('table.sortable').forEach(function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
      th.title='click to sort';
      th.addEventListener('click',function(){var d=th.dataset.dir?(th.dataset.dir==='asc'?'desc':'asc'):firstDir(th);sortTable(table,col,d);});
    });
  });
  var filter=document.getElementById('filter');
  if(filter){filter.addEventListener('input',function(){var q=filter.value.toLowerCase();
    document.querySelectorAll('#board tbody tr').forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}
  if(location.hash==='#selftest'){
    var table=document.getElementById('board'),ths=table.tHead.rows[0].cells,col=-1;
    for(var i=0;i<ths.length;i++){if(ths[i].dataset.type==='num'){col=i;break;}}
    var result='ok';
    if(col>=0){sortTable(table,col,'desc');var seen=[],ok=true,missing=false;
      Array.prototype.forEach.call(table.tBodies[0].rows,function(r){var v=key(r.cells[col],true);
        if(v===null){missing=true;}else{if(missing){ok=false;}if(seen.length&&v>seen[seen.length-1]){ok=false;}seen.push(v);}});
      if(!ok){result='fail: column '+ths[col].textContent+' not sorted';}}
    document.body.dataset.selftest=result;
  }
  document.body.dataset.ready='1';
})();
"""


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _cell(value: object, numeric: bool, title: str = "", text: str | None = None) -> str:
    text = format_value(value) if text is None else text
    missing = value is None or (isinstance(value, float) and math.isnan(value)) or text == "—"
    raw = "" if missing else (repr(float(value)) if numeric and isinstance(value, (int, float)) else str(value))  # type: ignore[arg-type]
    cls = "missing" if missing and numeric else ("num" if numeric else "")
    attrs = f' class="{cls}"' if cls else ""
    attrs += f' title="{escape(title)}"' if title else ""
    return f'<td data-v="{escape(raw)}"{attrs}>{escape(text)}</td>'


def board_table(board: Leaderboard) -> str:
    """The leaderboard ``<table>``, every metric column; cells read ``value ± half-width``, the tooltip
    gives the interval, its method and the number of items."""
    frame = board.frame
    head = []
    for col in frame.columns:
        numeric = col in board.metric_columns
        hib = board.higher_is_better.get(col)
        head.append(f'<th data-type="{"num" if numeric else "text"}" data-hib="{str(hib).lower()}">{escape(col)}</th>')
    body = []
    for pos, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for col in frame.columns:
            value = row[col]
            if col == "kind":
                cells.append(
                    f'<td data-v="{escape(str(value))}"><span class="badge {escape(str(value))}">{escape(str(value))}</span></td>'
                )
            elif col in board.metric_columns:
                interval = board.intervals.get((pos, col))
                tip = (
                    interval.describe(2)
                    if interval is not None
                    else ("reported: no interval" if row["kind"] == "reported" else "")
                )
                cells.append(_cell(value, True, tip, format_cell(board, pos, col, value)))
            elif col == "source":
                text = short_source_text(str(value)) if row["kind"] == "measured" else str(value)
                cells.append(f'<td data-v="{escape(text)}" title="{escape(str(value))}">{escape(text)}</td>')
            elif col == "notes":
                cells.append(f'<td class="notes" data-v="{escape(str(value))}">{escape(str(value))}</td>')
            else:
                cells.append(_cell(value, False))
        body.append(f'<tr class="{escape(str(row["kind"]))}">' + "".join(cells) + "</tr>")
    return (
        '<table id="board" class="sortable"><thead><tr>'
        + "".join(head)
        + "</tr></thead><tbody>"
        + "\n".join(body)
        + "</tbody></table>"
    )


def _simple_table(frame: pd.DataFrame, css_class: str = "sortable", row_class: str | None = None) -> str:
    head = "".join(
        f'<th data-type="{"num" if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].dtype != bool else "text"}">{escape(str(c))}</th>'
        for c in frame.columns
    )
    rows = []
    for _, row in frame.iterrows():
        cls = f' class="{row_class}-{row.get("agree")}"' if row_class else ""
        cells = "".join(
            _cell(
                None if pd.isna(row[c]) else row[c], isinstance(row[c], (int, float)) and not isinstance(row[c], bool)
            )
            for c in frame.columns
        )
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>' + "".join(rows) + "</tbody></table>"


def judge_section(pair: JudgePair, stats: dict) -> str:
    """Statistics table plus the item-by-item comparison (disagreements first)."""
    shown = flat_stats(stats)
    stats_frame = pd.DataFrame(
        {
            "statistic": list(shown),
            "value": [format_value(v) if not isinstance(v, float) else f"{v:.3f}" for v in shown.values()],
        }
    )
    items = side_by_side(pair)
    note = f"{len(pair.ids)} items compared; intervals: {escape(interval_method(stats))}"
    if pair.prediction_mismatches:
        note += f"; {pair.prediction_mismatches} items left out (different predictions)"
    more = f" (first {_MAX_ITEMS} of {len(items)})" if len(items) > _MAX_ITEMS else ""
    return (
        f"<h3>{escape(pair.title)}</h3><p class='meta'>{note}</p>"
        + _simple_table(stats_frame, css_class="stats")
        + f"<details><summary>items side by side{more}</summary>"
        + _simple_table(items.head(_MAX_ITEMS), row_class="agree")
        + "</details>"
    )


def render(
    board: Leaderboard,
    plots: list[tuple[str, list[Path]]],
    judge_sections: list[str],
    title: str = "LLaMA-VID leaderboard",
) -> str:
    """The whole page as a string."""
    figures = "".join(
        f'<figure><img alt="{escape(caption)}" src="{data_uri(paths[0])}"><figcaption>{escape(caption)} ({escape(paths[0].stem)}.png/.svg)</figcaption></figure>'
        for caption, paths in plots
    )
    judges = "<h2>Judge comparison</h2>" + "".join(judge_sections) if judge_sections else ""
    measured = int((board.frame["kind"] == "measured").sum()) if len(board.frame) else 0
    notes = '<ul class="meta">' + "".join(f"<li>{escape(n)}</li>" for n in interval_notes(board)) + "</ul>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body><h1>{escape(title)}</h1>
<p class="meta">generated {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")} UTC · {measured} measured row(s), {len(board.frame) - measured} reported ·
<span class="badge reported">reported</span> = number from the paper or the reproduction study, <span class="badge measured">measured</span> = an lmms-eval run here ·
"—" = no value (missing or failed, never zero) · click a column header to sort, hover a number for its interval</p>
<div class="layout"><section class="tablebox"><input id="filter" type="search" placeholder="filter rows…">{board_table(board)}{notes}{judges}</section>
<aside class="plots">{figures or '<p class="meta">no plots for these runs</p>'}</aside></div>
<script>{_JS}</script></body></html>
"""
