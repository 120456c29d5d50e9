"""Messages the app's workers and widgets post upward; the app and screens react."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from core.data.loading import LoadedDataset
from core.progress import Progress
from core.store.margin_sources import ResolvedMargins


@dataclass
class WorkProgress(Message):
    """A throttled progress snapshot from a background worker."""

    group: str
    progress: Progress


@dataclass
class DatasetLoaded(Message):
    """The workspace's dataset is loaded (from its cache or from the source)."""

    dataset: LoadedDataset


@dataclass
class DemoModelsReady(Message):
    """The demo world's tiny models exist (built now or found in the cache)."""

    root: str


@dataclass
class MarginsResolved(Message):
    """The margin sources the curation pane works on (empty when there are none yet)."""

    dataset: LoadedDataset
    resolved: ResolvedMargins | None
