from tlsgate.master.workers import MAX_BACKOFF, respawn_delay


def test_first_death_is_replaced_at_once():
    assert respawn_delay(0) == 0.0
    assert respawn_delay(1) == 0.0


def test_crash_loop_backs_off_exponentially_up_to_the_cap():
    delays = [respawn_delay(n) for n in range(2, 12)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert all(b >= a for a, b in zip(delays, delays[1:], strict=False))
    assert respawn_delay(50) == MAX_BACKOFF
