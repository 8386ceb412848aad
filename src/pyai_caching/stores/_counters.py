"""Counter groups kept in memory, for the stores that keep their counters in this process."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ("CounterGroups",)


@dataclass
class CounterGroups:
    groups: defaultdict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, name: str, counters: Mapping[str, float]) -> None:
        group = self.groups[name]
        for counter, value in counters.items():
            group[counter] = group.get(counter, 0.0) + value

    def read(self, prefix: str) -> dict[str, dict[str, float]]:
        return {name: dict(group) for name, group in self.groups.items() if name.startswith(prefix)}
