"""EmberDB's Python client: numpy in, numpy and pandas out, every evaluation and model-version
operation as a typed result.

    import emberdb
    with emberdb.Client("127.0.0.1:50051") as c:
        c.create_version("images", "resnet-v1", dim=512, metric="cosine")
        c.upsert("images", "resnet-v1", ids, embeddings, labels=labels)
        hits = c.search("images", "resnet-v1", embeddings[0], k=10)
        c.confusion("images", "resnet-v1").matrix()
"""
from .client import AsyncClient, Client
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    EmberError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from .types import (
    ActionItem,
    ActionList,
    BatchHits,
    CanaryReport,
    CollectionInfo,
    ConfusionReport,
    ConsistencyReport,
    DriftReport,
    Hits,
    MarginReport,
    MonitorStatus,
    Points,
    Projection,
    RecallReport,
    SnapshotInfo,
    BundleInfo,
    VersionInfo,
    Window,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "EmberError",
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "ResourceExhausted",
    "Unauthenticated",
    "PermissionDenied",
    "DeadlineExceeded",
    "Unavailable",
    "ActionItem",
    "ActionList",
    "BatchHits",
    "CanaryReport",
    "CollectionInfo",
    "ConfusionReport",
    "ConsistencyReport",
    "DriftReport",
    "Hits",
    "MarginReport",
    "MonitorStatus",
    "Points",
    "Projection",
    "RecallReport",
    "SnapshotInfo",
    "BundleInfo",
    "VersionInfo",
    "Window",
]
