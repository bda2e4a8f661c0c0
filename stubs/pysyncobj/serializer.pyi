# The part of pysyncobj's serializer module raftorch touches: the gzip module it opens
# full dumps through (raftorch.raft.node.fast_dump_compression replaces it).
from typing import Any

gzip: Any
