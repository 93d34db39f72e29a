"""What one finished shard task reports, and its JSON file ``reports/shard-NNNNNN.json``.

A report is the manifest's ``ShardEntry`` for the shard plus what only the writer knows:
samples planned, the plan it was built for, skipped samples, stage timings and counts.
The manifest's shard entries are ``report.entry``: one type, derived in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from lmdbshard.errors import FormatError
from lmdbshard.format.manifest import ShardEntry, Skipped
from lmdbshard.format.schema import Fields


@dataclass(frozen=True)
class ShardReport:
    """A complete shard: its manifest entry, and how it was built."""

    entry: ShardEntry
    planned: int                  # samples planned for the shard; entry.count of them were stored
    errors: list[Skipped] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    passthrough: int = 0          # records that store the source file's bytes unchanged
    masks: int = 0                # records with a mask
    # Records per label ("-1": none), python sources only: their labels are known only once the task
    # reads the items. File sources leave it empty: their class counts follow from the listing.
    label_counts: dict[str, int] = field(default_factory=dict)
    plan_sha256: str = ""         # the plan the shard was built for; stamped by the driver that ran it

    @property
    def index(self) -> int:
        return self.entry.index

    def to_json(self) -> dict[str, Any]:
        return {**self.entry.to_json(), "planned": self.planned, "plan_sha256": self.plan_sha256,
                "errors": [e.to_json() for e in self.errors], "seconds": self.seconds,
                "passthrough": self.passthrough, "masks": self.masks,
                **({"label_counts": self.label_counts} if self.label_counts else {})}

    @classmethod
    def from_json(cls, data: Any, path: str) -> "ShardReport":
        """Parse a report file's document; a malformed one raises ``FormatError`` naming ``path``."""
        if not isinstance(data, dict):
            raise FormatError(f"{path}: a shard report must be a JSON object")
        d = Fields(data, path)
        entry = ShardEntry.from_json(d)
        errors = [Skipped.from_json(e) for e in d.objects("errors")]
        seconds = d.opt("seconds", dict) or {}
        counts = d.opt("label_counts", dict) or {}
        if not all(isinstance(v, (int, float)) for v in seconds.values()):
            d.fail("seconds must map stage names to numbers")
        if not all(type(v) is int for v in counts.values()):
            d.fail("label_counts must map labels to integers")
        return cls(entry, d.count("planned"), errors, seconds,
                   d.count("passthrough") if "passthrough" in data else 0,
                   d.count("masks") if "masks" in data else 0, counts, d.opt("plan_sha256", str) or "")

    @classmethod
    def load(cls, path: str) -> "ShardReport":
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except ValueError as exc:
                raise FormatError(f"{path} is not valid JSON ({exc})") from None
        return cls.from_json(data, path)


@dataclass
class ReportSet:
    """The complete shards of a job, by index, with the totals the summary and the manifest need.
    Per shard it holds O(1) data plus the shard's skipped samples: a report's ``label_counts`` are
    folded into ``label_counts`` (the job's) as it is added, and not kept with the report."""

    reports: dict[int, ShardReport] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)   # records per label, summed over shards

    def add(self, report: ShardReport) -> None:
        for label, n in report.label_counts.items():
            self.label_counts[label] = self.label_counts.get(label, 0) + n
        self.reports[report.index] = replace(report, label_counts={}) if report.label_counts else report

    def __contains__(self, index: int) -> bool:
        return index in self.reports

    def __len__(self) -> int:
        return len(self.reports)

    def __iter__(self):
        return iter(self.reports.values())

    def of(self, indices: Iterable[int]) -> list[ShardReport]:
        return [self.reports[k] for k in indices]

    @property
    def written(self) -> int:
        return sum(r.entry.count for r in self)

    @property
    def planned(self) -> int:
        return sum(r.planned for r in self)

    @property
    def skipped(self) -> list[Skipped]:
        return [e for r in self for e in r.errors]

    @property
    def bytes(self) -> int:
        return sum(r.entry.bytes for r in self)

    @property
    def passthrough(self) -> int:
        return sum(r.passthrough for r in self)

    @property
    def has_masks(self) -> bool:
        return any(r.masks for r in self)


def stage_seconds(reports: Iterable[ShardReport], stages: Iterable[str]) -> dict[str, float]:
    """Seconds per stage summed over shard reports (over every worker that built them)."""
    reports = list(reports)
    return {s: round(sum(r.seconds.get(s, 0.0) for r in reports), 3) for s in stages}
