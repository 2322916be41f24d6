"""Inline SVG charts of the report (no script, no network): the funnel as bars beside its
table, the clips kept per class as stacked bars (one colour per split) and the sync
certificates' histograms as bars (clips per value)."""
from __future__ import annotations

import html
from typing import Any, Iterable, Mapping

#: bar colour of each funnel unit and each split; others take ``_OTHER``
UNIT_COLOURS = {"sources": "#4a7ab5", "shots": "#5b9a68", "windows": "#d98c2b", "clips": "#8e5ea2"}
SPLIT_COLOURS = {"train": "#4a7ab5", "test": "#d98c2b", "val": "#5b9a68"}
_OTHER = "#999999"
_ROW = 20            # pixels per bar row
_LABEL = 170         # pixels for the row labels
_BAR = 320           # pixels of the longest bar
_NUM = 110           # pixels for the numbers after a bar


def _esc(x: Any) -> str:
    return html.escape(str(x))


def funnel_rows(funnel: Iterable[Any]) -> list[tuple[str, int, str]]:
    """(stage, count, unit) of each funnel entry; entries are ``[stage, count]`` or
    ``{stage, count, unit}``."""
    out = []
    for f in funnel:
        if isinstance(f, Mapping):
            out.append((str(f["stage"]), int(f["count"]), str(f.get("unit", ""))))
        else:
            out.append((str(f[0]), int(f[1]), ""))
    return out


def _svg(kind: str, width: int, height: int, label: str, body: list[str]) -> str:
    return (f'<svg class="chart {kind}" role="img" '
            f'aria-label="{_esc(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
            + "".join(body) + "</svg>")


def _label(y: int, text: str) -> str:
    short = text if len(text) <= 26 else text[:25] + "…"
    return (f'<text x="{_LABEL - 6}" y="{y + 13}" text-anchor="end">{_esc(short)}'
            f"<title>{_esc(text)}</title></text>")


def funnel_svg(funnel: Iterable[Any]) -> str:
    """One bar per funnel stage, its length the share of the first stage of the same unit
    (sources, shots, windows, clips each start at 100 %), coloured by unit."""
    rows, firsts = funnel_rows(funnel), {}
    body = []
    for i, (stage, count, unit) in enumerate(rows):
        first = firsts.setdefault(unit, count)
        frac = count / first if first else 0.0
        y = 4 + i * _ROW
        colour = UNIT_COLOURS.get(unit, _OTHER)
        body += [_label(y, stage),
                 f'<rect x="{_LABEL}" y="{y + 2}" width="{max(frac * _BAR, 1):.1f}" height="{_ROW - 6}" '
                 f'fill="{colour}"><title>{_esc(stage)}: {count:,} {_esc(unit)}</title></rect>',
                 f'<text x="{_LABEL + frac * _BAR + 4:.1f}" y="{y + 13}">{count:,} '
                 f'({100 * frac:.1f} %)</text>']
    units = list(dict.fromkeys(u for _, _, u in rows))
    y = 8 + len(rows) * _ROW
    for j, unit in enumerate(units):       # legend: one swatch per unit
        x = _LABEL + j * 90
        body += [f'<rect x="{x}" y="{y}" width="10" height="10" fill="{UNIT_COLOURS.get(unit, _OTHER)}"/>',
                 f'<text x="{x + 14}" y="{y + 9}">{_esc(unit or "count")}</text>']
    return _svg("funnel", _LABEL + _BAR + _NUM + 40, y + 18, "funnel: items left after each stage", body)


def kept_per_class(per_class: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """{class: {split: clips kept}} from the per-class counts (``selected_<split>`` keys, or a
    plain ``selected``)."""
    out: dict[str, dict[str, int]] = {}
    for cls, counts in per_class.items():
        splits = {k[len("selected_"):] if k.startswith("selected_") else "": int(v)
                  for k, v in counts.items() if k == "selected" or k.startswith("selected_")}
        out[str(cls)] = splits
    return out


def class_bars_svg(per_class: Mapping[str, Mapping[str, Any]]) -> str:
    """One stacked bar per class: its kept clips by split, on one scale for all classes."""
    kept = kept_per_class(per_class)
    known = list(SPLIT_COLOURS)
    splits = sorted({s for v in kept.values() for s in v},
                    key=lambda s: (known.index(s) if s in known else len(known), s))
    top = max((sum(v.values()) for v in kept.values()), default=0) or 1
    body = []
    for i, (cls, counts) in enumerate(sorted(kept.items())):
        y, x = 4 + i * _ROW, float(_LABEL)
        body.append(_label(y, cls))
        for s in splits:
            w = counts.get(s, 0) / top * _BAR
            if w > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{_ROW - 6}" '
                            f'fill="{SPLIT_COLOURS.get(s, _OTHER)}"><title>{_esc(cls)}: '
                            f'{counts[s]} {_esc(s or "kept")}</title></rect>')
                x += w
        total = sum(counts.values())
        detail = ", ".join(f"{counts[s]} {s}" for s in splits if counts.get(s)) if len(splits) > 1 else ""
        body.append(f'<text x="{x + 4:.1f}" y="{y + 13}">{total}'
                    f'{_esc(f" ({detail})") if detail else ""}</text>')
    y = 8 + len(kept) * _ROW
    for j, s in enumerate(splits):
        x = _LABEL + j * 90
        body += [f'<rect x="{x}" y="{y}" width="10" height="10" fill="{SPLIT_COLOURS.get(s, _OTHER)}"/>',
                 f'<text x="{x + 14}" y="{y + 9}">{_esc(s or "kept")}</text>']
    return _svg("per-class", _LABEL + _BAR + _NUM + 60, y + 18, "clips kept per class", body)


def counts_svg(label: str, counts: Mapping[str, int], colour: str = "#4a7ab5") -> str:
    """One bar per value of a histogram (``{value text: count}``, in the given order), on one
    scale: the sync certificates' DeSync and offsets, clips per value."""
    top = max(counts.values(), default=0) or 1
    body = []
    for i, (value, n) in enumerate(counts.items()):
        y = 4 + i * _ROW
        w = n / top * _BAR
        body += [_label(y, value),
                 f'<rect x="{_LABEL}" y="{y + 2}" width="{max(w, 1):.1f}" height="{_ROW - 6}" '
                 f'fill="{colour}"><title>{_esc(value)}: {n}</title></rect>',
                 f'<text x="{_LABEL + w + 4:.1f}" y="{y + 13}">{n}</text>']
    return _svg("counts", _LABEL + _BAR + _NUM, 8 + len(counts) * _ROW, label, body)
