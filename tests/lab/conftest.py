"""pytest fixtures of the namespace lab: `farm`, a factory of lab farms (labfarm.Farm) that
always tears them down, and on a failing test adds each node's view, nodes, buckets,
counters and daemon log to the failure's report. Run as root with Debian's python3:

  VIPFARMD=build/vipfarmd VIPFARMCTL=build/vipfarmctl \
      /usr/bin/python3 -m pytest -p no:cacheprovider tests/lab/test_nemesis.py
"""
import atexit
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.dont_write_bytecode = True

import labfarm  # noqa: E402


def _down_all():
    for f in list(labfarm.LIVE):
        f.down()


def pytest_configure(config):
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: pytest then runs every fixture's
    # teardown. atexit is the last resort for a farm a failed teardown left behind.
    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    atexit.register(_down_all)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for f in getattr(item, "_lab_farms", []):
            rep.sections.append((f"lab dump {f.sfx}", f.dump()))


def pytest_terminal_summary(terminalreporter):
    if labfarm.SUMMARY:
        terminalreporter.section("lab figures")
        for line in labfarm.SUMMARY:
            terminalreporter.write_line(line)


@pytest.fixture
def farm(request):
    """farm(n=3, split_brain="serve", start=True, **overrides) -> a started labfarm.Farm,
    converged on the view of all its nodes (start=False: built, nothing started); overrides
    are config keys as section__key=value. Every farm made is torn down when the test ends,
    however it ends."""
    made = []
    request.node._lab_farms = made

    def make(n=3, split_brain="serve", start=True, **overrides):
        f = labfarm.Farm(n=n, split_brain=split_brain, **overrides)
        made.append(f)
        f.up(start=start)
        return f

    try:
        yield make
    finally:
        left = []
        for f in made:
            f.down()
            left += f.leftovers()
        assert not left, f"the lab's teardown left {left}"
