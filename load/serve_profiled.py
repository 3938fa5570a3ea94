"""``bff serve`` under cProfile, switched by signals, for ``python -m load.storm --profile FILE``.

    python -m load.serve_profiled /tmp/storm-app.prof

runs exactly what ``bff serve`` runs (``bootstrap.cli.main(["serve"])``, same environment). SIGUSR1 starts a fresh
profile; SIGUSR2 stops it and writes ``<FILE>.<n>`` (n = 1, 2, ...) and then ``<FILE>.<n>.done``, which the
benchmark waits for. Only the main thread is profiled: the event loop serving the requests runs there.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from pathlib import Path
from types import FrameType


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m load.serve_profiled OUTPUT_BASE", file=sys.stderr)
        return 2
    base = argv[0]
    state: dict[str, object] = {"profiler": None, "n": 0}

    def start(_signum: int, _frame: FrameType | None) -> None:
        profiler = cProfile.Profile()
        state["profiler"] = profiler
        profiler.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        profiler = state["profiler"]
        if not isinstance(profiler, cProfile.Profile):
            return
        profiler.disable()
        n = int(str(state["n"])) + 1
        state["n"], state["profiler"] = n, None
        profiler.dump_stats(f"{base}.{n}")
        Path(f"{base}.{n}.done").touch()

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from bootstrap.cli import main as bff_main

    return bff_main(["serve"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
