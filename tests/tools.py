"""External programs that some tests need: podman, podman-compose, promtool, shellcheck,
ip, nft, dnsmasq, chromium and chromedriver.

On a developer machine without one of them, those tests skip and say which program is
missing and how to get it. CI sets ``QUDAG_REQUIRE_TOOLS=1``: there a missing program fails
the test instead, so a green run means the container, compose, Prometheus and deploy-script
tests really ran.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: Debian package that provides each program.
PACKAGES = {
    "podman": "podman",
    "podman-compose": "podman-compose",
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "shellcheck": "shellcheck",
    "debootstrap": "debootstrap",
    "ip": "iproute2",
    "tc": "iproute2",
    "nft": "nftables",
    "dnsmasq": "dnsmasq",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}


def tools_required() -> bool:
    """Whether a missing program must fail the test rather than skip it."""
    return os.environ.get("QUDAG_REQUIRE_TOOLS", "") not in ("", "0")


def require_tool(name: str) -> str:
    """Return the path of program ``name``; skip the test (or fail it in CI) when it is missing."""
    path = shutil.which(name)
    if path is not None:
        return path
    package = PACKAGES.get(name, name)
    reason = f"{name} is not installed (Debian: apt-get install {package})"
    if tools_required():
        pytest.fail(f"QUDAG_REQUIRE_TOOLS is set but {reason}")
    pytest.skip(reason)
