"""`python -m trainer.client replay [FILE ...] [--url URL]`: send spooled markers to a daemon."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from trainer.client.environment import daemon_url, default_spool_dir
from trainer.client.replay import Interrupted, replay
from trainer.client.spool import ClaimedSpool, abandoned, claim
from trainer.client.transport import Rejected, Transport, Unreachable


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.client",
                                     description="joulemeter training client utilities.")
    sub = parser.add_subparsers(dest="command", required=True)
    rp = sub.add_parser("replay", help="send spooled phase markers (and the run's registration and stop) to a daemon",
                        description="Replays spool files: registers each run, sends its markers and stops it. The "
                                    "daemon stores a re-sent marker once, so replaying twice is harmless. A file is "
                                    "removed once the daemon has all of it.")
    rp.add_argument("files", nargs="*", type=Path, metavar="FILE",
                    help="spool files (default: every file this host left in the spool folder)")
    rp.add_argument("--url", help="daemon to send to (default: the one each file was written for)")
    rp.add_argument("--spool-dir", type=Path, help="spool folder (default: TELEMETRY_SPOOL_DIR, else "
                                                   "~/.local/share/joulemeter/spool)")
    return parser


def _replay(claimed: ClaimedSpool, url: str | None) -> bool:
    path = claimed.path
    target = url or daemon_url(str(claimed.contents.header.get("url") or "") or None)
    try:
        with Transport(target) as transport:
            result = replay(transport, claimed.contents, writer_gone=True, written_at=path.stat().st_mtime)
    except (Unreachable, Interrupted) as exc:
        print(f"{path}: the daemon at {target} is unreachable ({exc}); file kept", file=sys.stderr)
        return False
    except Rejected as exc:
        print(f"{path}: the daemon at {target} refused it ({exc.detail}); file kept", file=sys.stderr)
        return False
    except (KeyError, TypeError, ValueError) as exc:  # a record this client cannot read: say so, keep the file
        print(f"{path}: cannot be replayed ({type(exc).__name__}: {exc}); file kept", file=sys.stderr)
        return False
    claimed.remove()
    rejected = f", {result.rejected} refused by the daemon" if result.rejected else ""
    stopped = f"; run stopped as {result.stopped}" if result.stopped else ""
    print(f"{path}: run {result.run_id}: {result.markers} marker(s) sent to {target}{rejected}{stopped}")
    return True


def replay_command(files: list[Path], url: str | None, spool_dir: Path | None) -> int:
    ok: list[bool] = []
    if files:
        for path in files:
            claimed = claim(path)
            if claimed is None:
                reason = "in use by a running client or another replay" if path.exists() else "no such file"
                print(f"{path}: {reason}", file=sys.stderr)
                ok.append(False)
                continue
            with claimed:
                ok.append(_replay(claimed, url))
    else:
        directory = spool_dir or default_spool_dir()
        for claimed in abandoned(directory, socket.gethostname(), None):
            with claimed:
                ok.append(_replay(claimed, url))
        print(f"{sum(ok)} of {len(ok)} spool file(s) in {directory} replayed")
    return 0 if all(ok) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    url = daemon_url(args.url) if args.url else None
    return replay_command(args.files, url, args.spool_dir)


if __name__ == "__main__":
    sys.exit(main())
