"""pingall's pace: first pings on a flat network are ARP broadcasts every switch floods to every host."""

from emulator.runtime import icmp


def test_requests_in_flight_shrink_as_the_flat_network_grows():
    assert icmp.in_flight_for(100) == icmp.IN_FLIGHT
    assert icmp.in_flight_for(1000) == icmp.IN_FLIGHT  # 2,000 sampled pairs lost none there at 32 at once
    assert icmp.in_flight_for(10_000) == 3
    assert icmp.in_flight_for(10_000) * 10_000 <= icmp.FLOOD_BUDGET
    assert icmp.in_flight_for(1_000_000) == 1  # never none
    assert icmp.in_flight_for(0) == icmp.IN_FLIGHT
