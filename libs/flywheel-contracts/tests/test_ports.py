import socket

from flywheel_contracts import ports


def test_ports_are_outside_the_ephemeral_range_distinct_and_bindable() -> None:
    start = ports._ephemeral_start()
    chosen = [ports.free_port() for _ in range(50)]
    assert len(set(chosen)) == len(chosen)
    assert all(10_000 <= port < start for port in chosen)
    for port in chosen[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_someone_listens_on_is_never_chosen(monkeypatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        busy.listen()
        draws = iter([taken, taken, 20_000])
        monkeypatch.setattr(ports.random.SystemRandom, "randrange", lambda self, lo, hi: next(draws))
        monkeypatch.setattr(ports, "_ephemeral_start", lambda: 60_000)
        monkeypatch.setattr(ports, "_handed_out", set())
        assert ports.free_port() == 20_000
