"""What CloudWatch Logs has acknowledged, kept in a small file next to the flow log.

The file names one flow-log file by the fingerprint of its first line (which
survives rotation's rename and gzip; inodes do not survive gzip) and the byte
offset, in that file's uncompressed content, up to which every line has been
acknowledged (or deliberately skipped). Everything in older files is done too.
It is rewritten atomically (a temporary file, then a rename), so a crash
leaves either the old or the new checkpoint, never a torn one.

Example (``network-policy-agent.cloudwatch-checkpoint.json``)::

    {"file":"network-policy-agent-2026-08-07T15-04-05.000.log.gz",
     "fingerprint":"5f2b0c9d41e6a7b3","offset":209715011,
     "logGroupName":"/aws/eks/prod/cluster",
     "logStreamName":"aws-network-policy-agent-audit-ip-10-0-0-1",
     "updated":"2026-08-07T15:04:07.218Z"}
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

# Neither the Fluent Bit glob network-policy-agent*.log nor *.log.gz matches it.
CHECKPOINT_SUFFIX = ".cloudwatch-checkpoint.json"


def checkpoint_path_for(log_path: Path, directory: Path | None = None) -> Path:
    """``<dir>/<stem>.cloudwatch-checkpoint.json``, by default in the log's own directory."""
    return (directory or log_path.parent) / f"{log_path.stem}{CHECKPOINT_SUFFIX}"


@dataclass(frozen=True)
class Checkpoint:
    file: str  # the file's name when the checkpoint was written (a hint: it may be renamed)
    fingerprint: str
    offset: int
    log_group: str = ""
    log_stream: str = ""


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint in ``path``; None when there is none or it cannot be read (logged)."""
    try:
        document = orjson.loads(path.read_bytes())
        return Checkpoint(
            file=str(document["file"]),
            fingerprint=str(document["fingerprint"]),
            offset=int(document["offset"]),
            log_group=str(document.get("logGroupName", "")),
            log_stream=str(document.get("logStreamName", "")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring unreadable CloudWatch checkpoint %s: %s", path, error)
        return None


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Replace ``path`` atomically; raises OSError."""
    now = time.time()
    document = {
        "file": checkpoint.file,
        "fingerprint": checkpoint.fingerprint,
        "offset": checkpoint.offset,
        "logGroupName": checkpoint.log_group,
        "logStreamName": checkpoint.log_stream,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now * 1000) % 1000:03d}Z",
    }
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(orjson.dumps(document) + b"\n")
    os.replace(partial, path)
