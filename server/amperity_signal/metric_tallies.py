"""Counting in plain Python numbers, folded into prometheus-client's metrics at each collect.

``Counter.inc`` and ``Histogram.observe`` take a lock and check their argument each time;
the hottest children (counted on every request) count through a ``Tally`` or a
``HistogramTally`` instead, and ``TalliedCounter.collect`` / ``TalliedHistogram.collect``
add what those hold, so every scrape is exact. Nothing here knows the service's metric
names: ``metrics.Metrics`` declares which metrics are tallied.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from prometheus_client import Counter, Histogram, values
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample


class Increments(Protocol):
    """What counts one more: a ``Counter`` child or a ``Tally``."""

    def inc(self) -> Any:
        """Count one."""


class Tally:
    """One ``Counter`` child's increments, kept in a plain int until the counter is collected.

    ``Counter.inc`` costs ~4.4k instructions (its checks and its lock); ``Tally.inc`` a few
    hundred. A page's ``/v1/enrich`` counts four cache reads (docs/benchmarks.md, session
    16). ``TalliedCounter.collect`` folds the count into the child, so every scrape (and
    every ``get_sample_value``) sees exact values. Incremented and collected on one thread:
    the event loop's, where the service and the gateway's ``/metrics`` both run.
    """

    __slots__ = ("_child", "count")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self.count = 0

    def inc(self) -> None:
        """Count one."""
        self.count += 1

    def fold(self) -> None:
        """Add the count to the child and start again from zero."""
        count = self.count
        if count:
            self.count = 0
            self._child.inc(count)


class TalliedCounter(Counter):
    """A ``Counter`` whose hottest children may be counted through a ``Tally``.

    Each ``collect`` first folds every tally into its child. With ``PROMETHEUS_MULTIPROC_DIR``
    set (several workers) ``tally`` gives the child itself: there ``/metrics`` reads every
    worker's values from their files, where a count still held in another worker's tally
    would be missing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tallies: dict[tuple[str, ...], Tally] = {}

    def tally(self, *labelvalues: str) -> Increments:
        """What counts one more for these label values: a ``Tally``, or the child itself.

        One tally per child, however often it is asked for.
        """
        child = self.labels(*labelvalues)
        if values.ValueClass is not values.MutexValue:  # multiprocess mode
            return child
        tally = self._tallies.get(labelvalues)
        if tally is None:
            tally = self._tallies[labelvalues] = Tally(child)
        return tally

    def collect(self) -> Iterable[Metric]:
        """The counter's samples, every tally folded in first."""
        for tally in self._tallies.values():
            tally.fold()
        return super().collect()


class Observes(Protocol):
    """What observes a value: a ``Histogram`` child or a ``HistogramTally``."""

    def observe(self, amount: float) -> Any:
        """Observe ``amount``."""


class HistogramTally:
    """One ``Histogram`` child's observations, kept in plain numbers.

    ``Histogram.observe`` costs ~9.7k instructions (its checks, a Python walk over the
    bounds and two locked increments); this a bisection and two additions. Each request
    to ``/v1/enrich`` makes two (the gateway's and the RPC's latency). Never folded into
    the child (no public call adds to its buckets): ``TalliedHistogram.collect`` adds the
    tally to the child's samples instead. One thread, as ``Tally``.
    """

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        """Count ``amount`` in the first bucket whose bound is not below it."""
        self.sum += amount
        self.counts[bisect_left(self._bounds, amount)] += 1

    def added(self, sample: Sample, bounds: Sequence[float]) -> Sample:
        """``sample`` of the child (a bucket, the count or the sum) with this tally added."""
        name = sample.name
        if name.endswith("_bucket"):
            last = bisect_left(bounds, float(sample.labels["le"]))
            return sample._replace(value=sample.value + sum(self.counts[: last + 1]))
        if name.endswith("_count"):
            return sample._replace(value=sample.value + sum(self.counts))
        if name.endswith("_sum"):
            return sample._replace(value=sample.value + self.sum)
        return sample


class TalliedHistogram(Histogram):
    """A ``Histogram`` whose hottest children may observe through a ``HistogramTally``.

    ``collect`` adds each tally to its child's samples, so every scrape is exact. With
    ``PROMETHEUS_MULTIPROC_DIR`` set, ``tally`` gives the child itself (as
    ``TalliedCounter.tally``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        buckets = [float(b) for b in kwargs.get("buckets", Histogram.DEFAULT_BUCKETS)]
        self._bounds = buckets if buckets[-1] == math.inf else [*buckets, math.inf]
        self._tallies: dict[tuple[str, ...], HistogramTally] = {}

    def tally(self, *labelvalues: str) -> Observes:
        """What observes for these label values: a ``HistogramTally``, or the child itself."""
        child = self.labels(*labelvalues)
        if values.ValueClass is not values.MutexValue:  # multiprocess mode
            return child
        tally = self._tallies.get(labelvalues)
        if tally is None:
            tally = self._tallies[labelvalues] = HistogramTally(self._bounds)
        return tally

    def collect(self) -> Iterable[Metric]:
        """The histogram's samples, each child's tally added."""
        metrics = list(super().collect())
        if not self._tallies:
            return metrics
        names = self._labelnames
        for metric in metrics:
            samples = []
            for sample in metric.samples:
                tally = self._tallies.get(tuple(sample.labels[name] for name in names))
                samples.append(sample if tally is None else tally.added(sample, self._bounds))
            metric.samples = samples
        return metrics
