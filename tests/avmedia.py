"""The generated test media moved to ``testkit/avmedia.py`` (benchmarks import it too, and
nothing outside tests imports ``tests``); this name stays for imports that predate the move."""
from testkit.avmedia import *  # noqa: F401,F403
