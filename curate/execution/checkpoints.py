"""Streaming, fingerprinted stage runner (executor-agnostic; no Ray here).

A stage maps items (JSON-able dicts with a unique ``key``) to outputs (``{table: [rows]}``).
``run_stage`` hands every *pending* item to an executor at once; the executor streams
``(item, outputs)`` back in completion order (no barrier between groups of items) and the
runner appends one completion record per item to the stage's checkpoint:

    <out>/work/<stage>/part-NNNNN.jsonl     one line per item: {"key", "fp", "out"}

A part is written atomically (``manifests.atomic``) every ``flush_items`` items or
``flush_seconds`` seconds, so a killed build loses only the items in flight and those of the
last few seconds, never a whole stage.

Fingerprints: every record carries ``fp``, a hash of what the item was computed from: the
item's inputs (``item["inputs"]`` when the stage declares them, else every field but
``key``) and the stage's ``params`` (recipe parameters, model weight ids). A record counts
as done only while its fingerprint equals the item's current one, so a changed source row
or recipe parameter redoes exactly the affected items. A stage whose items are all done
starts no executor work at all.

Merging: ``StageResult.table(name)`` reads the current records part by part into Arrow
tables (one part's rows as Python dicts at a time), so the driver never holds a stage's
rows as Python objects. ``StageResult.outputs`` (row dicts) remains for small tables/tests."""
from __future__ import annotations

import hashlib
import json
import re
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from curate.execution.interrupt import check as check_interrupt
from manifests.atomic import write_text
from manifests.faults import FAULT_TEXT
from curate.execution.spec import Executor, Item, NODE_KEY, Outputs, StageSpec

log = logging.getLogger(__name__)

PART_GLOB = "part-*.jsonl"
#: ``manifests.faults.FAULT_TEXT`` over a part's bytes
_FAULT_BYTES = re.compile(FAULT_TEXT.pattern.encode(), re.IGNORECASE)


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def item_fingerprint(spec: StageSpec, item: Item) -> str:
    inputs = item["inputs"] if "inputs" in item else {k: v for k, v in item.items() if k != "key"}
    return fingerprint({"inputs": inputs, "params": spec.params})


# ----------------------------------------------------------------------------- checkpoint

class Checkpoint:
    """The completion records of one stage (``<out>/work/<stage>/part-*.jsonl``).

    Every record proves itself: a line is the record's JSON, a tab and the blake2b-64 of that
    JSON (``_seal``). A line whose checksum does not match (cut by a full disk, a crash of the
    machine before the data reached the disk, garbage appended) is not a record: its item is
    not done and is redone. Key and fingerprint are never trusted from a line's prefix alone.
    """

    def __init__(self, out: str | Path, stage: str):
        self.dir = Path(out) / "work" / stage
        self._next = 0

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob(PART_GLOB))

    def index(self) -> dict[str, tuple[str, int, int]]:
        """key -> (fp, part number, line) of its latest record."""
        idx: dict[str, tuple[str, int, int]] = {}
        for n, rec in self._records(keys_only=True):
            idx[rec["key"]] = (rec["fp"], n, rec["_line"])
        return idx

    def _records(self, keys_only: bool = False) -> Iterator[tuple[int, dict]]:
        for p in self.parts():
            n = int(p.name[5:10])
            for i, rec in read_part(p, keys_only=keys_only)[0]:
                rec["_line"] = i
                yield n, rec

    def fault_failed(self, idx: dict[str, tuple[str, int, int]]) -> set[str]:
        """Keys whose latest record (``idx``) is a failure for a fault of the machine (a full
        disk, a missing tool: ``manifests.faults.FAULT_TEXT``), recorded before such faults
        stopped the stage: they are not the data's and are redone."""
        keys: set[str] = set()
        for p in self.parts():
            try:
                data = p.read_bytes()
            except OSError:
                continue
            if not _FAULT_BYTES.search(data):
                continue
            n = int(p.name[5:10])
            for i, raw in enumerate(data.split(b"\n")):
                if not _FAULT_BYTES.search(raw):
                    continue
                rec = _parse_line(raw, keys_only=False)
                if rec is not None and idx.get(rec["key"], ("",))[1:] == (n, i) \
                        and failure_reason(rec.get("out") or {}):
                    keys.add(rec["key"])
        return keys

    def repair(self) -> list[str]:
        """Move aside every part holding a line that is not a sealed record (its good records
        are written back under the same name, so record order is kept); returns one warning
        per part, naming it. Run by the driver that holds the output's lock."""
        notes = []
        for p in self.parts():
            # the key-only read checks every line's seal as the full one does, at the cost
            # of the index: a whole part is parsed only when it has to be rewritten
            good, bad = read_part(p, keys_only=True)
            if not bad:
                continue
            good = read_part(p)[0]
            aside = self.dir / "aside"
            aside.mkdir(parents=True, exist_ok=True)
            dest = aside / f"{p.name}.{int(time.time())}.bad"
            # a copy first, then the part rewritten atomically: a crash in between leaves
            # either the old part or the repaired one, never neither
            try:
                shutil.copyfile(p, dest)
            except OSError as e:     # not even readable: it is skipped on every read anyway
                log.warning("checkpoint part %s cannot be read (%s): skipped, its items are redone", p, e)
                continue
            if good:
                write_text(p, "".join(_seal(r) for _i, r in good))
            else:
                p.unlink()
            lines = ", ".join(str(b + 1) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
            what = "could not be read" if bad == [-1] else \
                f"had {len(bad)} unreadable record(s) (line {lines})"
            msg = (f"checkpoint part {p} {what}: "
                   f"moved aside to {dest}, its {len(good)} good record(s) kept; "
                   f"the items of the unreadable ones are redone")
            log.warning("%s", msg)
            notes.append(msg)
        return notes

    def write_part(self, records: list[dict]) -> Path:
        existing = self.parts()
        self._next = max(self._next, int(existing[-1].name[5:10]) + 1 if existing else 0)
        path = self.dir / f"part-{self._next:05d}.jsonl"
        self._next += 1
        write_text(path, "".join(_seal(r) for r in records))
        return path

    def tables(self, current: dict[str, str], schemas: dict[str, pa.Schema] | None = None
               ) -> dict[str, pa.Table]:
        """Arrow tables of the outputs of the latest record of every key in ``current``
        whose fingerprint matches ``current[key]``, read part by part; rows come in the order
        of ``current``'s keys (the stage's item order), so a manifest does not depend on
        which worker finished first."""
        idx = self.index()
        want = {k: (n, line) for k, (fp, n, line) in idx.items() if current.get(k) == fp}
        pos = {k: i for i, k in enumerate(current)}
        schemas = schemas or {}
        pieces: dict[str, list[pa.Table]] = {}
        buf: dict[str, list[dict]] = {}
        order: dict[str, list[int]] = {}
        last_part = None

        def flush() -> None:
            for t, rows in buf.items():
                if rows:
                    tb = _to_arrow(rows, schemas.get(t))
                    pieces.setdefault(t, []).append(tb.append_column("_order", pa.array(order[t], pa.int64())))
            buf.clear()
            order.clear()
        for n, rec in self._records():
            if n != last_part:
                flush()
                last_part = n
            if want.get(rec["key"]) != (n, rec["_line"]):
                continue
            for t, rows in rec["out"].items():
                buf.setdefault(t, []).extend(rows)
                base = pos[rec["key"]] << 20        # item position, then row within the item
                order.setdefault(t, []).extend(base + i for i in range(len(rows)))
        flush()
        return {t: pa.concat_tables(ps, promote_options="permissive").sort_by("_order").drop_columns(["_order"])
                for t, ps in pieces.items()}


#: a record line starts with its key and fingerprint (``run_stage`` writes them first)
_HEAD = re.compile(r'^\{"key": ("(?:[^"\\]|\\.)*"), "fp": ("(?:[^"\\]|\\.)*"), ')


def _head(line: str) -> dict | None:
    """key and fp of a record without parsing its outputs (the index of a 1M-record stage
    reads in seconds); None when the line does not start that way (then it is parsed whole).
    Only ever applied to a line whose checksum matched."""
    m = _HEAD.match(line)
    return {"key": json.loads(m.group(1)), "fp": json.loads(m.group(2))} if m else None


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _seal(rec: dict) -> str:
    """One record line: JSON (which never holds a raw tab), a tab, the JSON's checksum."""
    body = json.dumps(rec, default=str)
    return f"{body}\t{_digest(body.encode())}\n"


def _parse_line(raw: bytes, keys_only: bool) -> dict | None:
    """The record of one line, or None when the line is not a whole, sealed record."""
    body, tab, digest = raw.rpartition(b"\t")
    if not tab:      # a line from before records were sealed: only a complete record counts
        body = raw
    elif _digest(body) != digest.decode("ascii", "replace").strip():
        return None
    try:
        text = body.decode("utf-8")
        rec = (_head(text) if keys_only and tab else None) or json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or "fp" not in rec:
        return None
    if not tab and not isinstance(rec.get("out"), dict):
        return None
    return rec


def read_part(path: Path, keys_only: bool = False) -> tuple[list[tuple[int, dict]], list[int]]:
    """([(line index, record)], [line indices that are not records]) of one part file; a part
    that cannot be read at all gives ``([], [-1])``."""
    try:
        data = path.read_bytes()
    except OSError as e:
        log.warning("cannot read checkpoint part %s: %s", path, e)
        return [], [-1]
    good, bad = [], []
    for i, raw in enumerate(data.split(b"\n")):
        if not raw.strip():
            continue
        rec = _parse_line(raw, keys_only)
        if rec is None:
            bad.append(i)
        else:
            good.append((i, rec))
    return good, bad


def read_records(path: str | Path) -> list[dict]:
    """The sealed records of one part file (benchmarks, tools)."""
    return [r for _i, r in read_part(Path(path))[0]]


def _to_arrow(rows: list[dict], schema: pa.Schema | None) -> pa.Table:
    if schema is not None:
        from manifests.schemas import to_table
        return to_table(rows, schema)
    # unknown table (e.g. "cuts"): JSON strings of mixed None/values infer fine per part
    names = list(dict.fromkeys(k for r in rows for k in r))
    return pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])


# ----------------------------------------------------------------------------- the run

@dataclass
class StageResult:
    checkpoint: Checkpoint
    current: dict[str, str]
    ran: int = 0
    skipped: int = 0
    failures: Counter = field(default_factory=Counter)   # reason -> count, of this run's items
    schemas: dict[str, pa.Schema] | None = None

    def tables(self) -> dict[str, pa.Table]:
        return self.checkpoint.tables(self.current, self.schemas)

    def table(self, name: str, schema: pa.Schema | None = None) -> pa.Table | None:
        return self.checkpoint.tables(self.current, {**(self.schemas or {}), **({name: schema} if schema else {})}).get(name)

    @property
    def outputs(self) -> Outputs:
        """Row dicts of every table (small stages and tests; big stages use ``table``)."""
        return {t: tb.to_pylist() for t, tb in self.tables().items()}


def failure_reason(outputs: Outputs) -> str | None:
    """The reason of a failed item, from its first failed row (``reason`` or error head)."""
    for rows in outputs.values():
        for r in rows:
            if r.get("status") == "failed":
                if r.get("reason"):
                    return str(r["reason"])
                err = str(r.get("error") or "error")
                return err.split(":")[0].strip()[:60] or "error"
    return None


def run_stage(out: str | Path, spec: StageSpec, items: list[Item], executor: Executor,
              progress: bool = True, redo: set[str] | None = None,
              flush_items: int = 64, flush_seconds: float = 5.0,
              schemas: dict[str, pa.Schema] | None = None, **_: Any) -> StageResult:
    """Run ``spec`` over the items not done yet (no current record, or in ``redo``).

    Returns a ``StageResult`` over the current records of *all* items, old and new.
    """
    from tqdm.auto import tqdm

    ck = Checkpoint(out, spec.name)
    ck.repair()          # a torn or garbled record is not done: its item is redone below
    current = {it["key"]: item_fingerprint(spec, it) for it in items}
    if len(current) != len(items):
        raise ValueError(f"stage {spec.name}: item keys are not unique")
    idx = ck.index()
    faulted = ck.fault_failed(idx)
    if faulted:
        log.info("%s: %d items failed earlier for a fault of the machine (disk, tool): redone",
                 spec.name, len(faulted))
    redo = (redo or set()) | faulted
    todo = [it for it in items
            if it["key"] in redo or idx.get(it["key"], ("",))[0] != current[it["key"]]]
    res = StageResult(ck, current, ran=len(todo), skipped=len(items) - len(todo), schemas=schemas)
    if not todo:
        return res
    bar = tqdm(total=len(todo), desc=spec.name, unit="item", disable=not progress)
    buf: list[dict] = []
    last = time.monotonic()
    try:
        for item, outputs in executor.run(spec, todo):
            rec = {"key": item["key"], "fp": current[item["key"]], "out": outputs}
            meta = outputs.pop(NODE_KEY, None)
            if meta:
                rec["node"] = meta[0]["node"]
            buf.append(rec)
            reason = failure_reason(outputs)
            if reason:
                res.failures[reason] += 1
            bar.update(1)
            check_interrupt()     # a signal noted inside a C call stops here, this result kept
            if len(buf) >= flush_items or time.monotonic() - last >= flush_seconds:
                ck.write_part(buf)
                buf, last = [], time.monotonic()
    finally:
        # an exception in the driver (Ctrl-C) keeps what finished; SIGKILL loses the buffer
        if buf:
            ck.write_part(buf)
        bar.close()
    return res


def format_failures(stage: str, failures: Counter) -> str | None:
    """``download: 3 failed: 2 http_error, 1 bot_check`` (None when nothing failed)."""
    n = sum(failures.values())
    if not n:
        return None
    parts = ", ".join(f"{c} {r}" for r, c in failures.most_common())
    return f"{stage}: {n} failed: {parts}"
