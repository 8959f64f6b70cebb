"""Node processes of the two peer transports: a node whose links run in the clear and
one whose links run inside TLS (the default) never link, and both say why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.network import Member, network
from tests.nodeproc import request, wait_until


def peers(member: Member) -> list[dict[str, Any]]:
    """``/api/v1/peers`` of ``member``."""
    code, body = request("GET", member.url + "/api/v1/peers", timeout=10)
    assert code == 200, (code, body)
    found: list[dict[str, Any]] = body["peers"]
    return found


def last_errors(member: Member) -> set[str | None]:
    return {p["last_error"] for p in peers(member)}


def wrong_transport(member: Member) -> float:
    return member.metric("qudag_peer_handshake_failures_total", {"reason": "wrong_transport"})


def test_a_plain_node_and_a_tls_node_refuse_each_other_as_wrong_transport(
    tmp_path: Path,
) -> None:
    with network(tmp_path, size=2) as net:
        tls = net.start("v1", ready=False)  # QUDAG_PEER_TRANSPORT unset: tls
        net.extra_env["QUDAG_PEER_TRANSPORT"] = "plain"
        plain = net.start("v2", ready=False)
        assert tls.status()["node"]["peer_transport"] == "tls"
        assert plain.status()["node"]["peer_transport"] == "plain"
        # each dials the other: each is refused as a dialer, and refuses as a listener
        for member in (plain, tls):

            def told(m: Member = member) -> bool:
                return last_errors(m) == {"wrong_transport"} and wrong_transport(m) >= 2

            wait_until(told, 20, f"{member.name} refused and refusing as wrong_transport")
        for member in (plain, tls):
            views = peers(member)
            assert all(p["state"] not in {"connected", "stale"} for p in views), views
            assert all(p["failures"] >= 1 for p in views), views
            assert member.status()["p2p"]["quorum"]["validators_linked"] == 1  # itself
