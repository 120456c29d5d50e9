"""One curation session for the app and the command line (`session`): a dataset with its
margins and annotations, the user's selection choices parsed and checked, the selection they
give, and its export.
"""

from core.curation.session import CurationSession

__all__ = [
    "CurationSession",
]
