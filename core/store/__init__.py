"""What a workspace keeps on disk beside a dataset: the workspace itself with its load cache,
settings and lock (`workspace`), score tables (`scores`), annotations
(`annotations`), which score table each margin source reads (`margin_sources`), the summary
`dmtui info` prints (`workspace_summary`) and the app's recently opened workspaces (`recent`).
"""

from core.store.annotations import AnnotationStore
from core.store.scores import ScoreStore
from core.store.workspace import Workspace

__all__ = [
    "AnnotationStore",
    "ScoreStore",
    "Workspace",
]
