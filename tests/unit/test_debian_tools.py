"""Tools from Debian's packages, installed on first use: an apt-get that hangs or fails
gives no tool, and the test or bench that wanted it goes on without it."""

from __future__ import annotations

import os
import time

import pytest

from infra import debian_tools


@pytest.mark.skipif(os.geteuid() != 0, reason="apt-get is only tried as root")
def test_an_apt_get_that_hangs_gives_no_tool_within_its_step_timeouts(tmp_path, monkeypatch):
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(debian_tools, "STEP_TIMEOUT_S", 0.3)
    debian_tools.ensure_debian_tool.cache_clear()
    try:
        started = time.monotonic()
        found = debian_tools.ensure_debian_tool("no-such-tool-here", "no-such-package")
        took_s = time.monotonic() - started
    finally:
        debian_tools.ensure_debian_tool.cache_clear()

    assert found is None
    assert took_s < 5  # one step timed out, and no other was tried
