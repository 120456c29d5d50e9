"""Reading a user's dataset into normalised preference pairs: file sources (JSON lines, CSV,
Parquet, `datasets` folders), column shapes and role-marked text, rendered chat templates, the
Arrow pair table with its `pair_id`s (`pairs`), and `loading.load_dataset`, which builds the
pairs and a `LoadReport` of what it kept, rejected and why.
"""

from core.data.loading import LoadConfig, LoadedDataset, LoadReport, load_dataset

__all__ = [
    "LoadConfig",
    "LoadReport",
    "LoadedDataset",
    "load_dataset",
]
