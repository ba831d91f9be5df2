"""Coming from Pion: the calls of Pion's ice ``examples/ping-pong``, written with trice.

With Pion (Go), each side runs::

    agent, _ := ice.NewAgent(&ice.AgentConfig{
        NetworkTypes: []ice.NetworkType{ice.NetworkTypeUDP4},
    })
    agent.OnCandidate(func(c ice.Candidate) {      // nil: gathering is complete
        if c != nil { signal(c.Marshal()) }
    })
    agent.OnConnectionStateChange(func(s ice.ConnectionState) { fmt.Println(s) })
    ufrag, pwd, _ := agent.GetLocalUserCredentials()  // signalled to the peer
    agent.AddRemoteCandidate(c)                      // each candidate the peer signals
    agent.GatherCandidates()
    conn, _ := agent.Dial(ctx, remoteUfrag, remotePwd)  // the controlled side: Accept
    conn.Write([]byte("ping")); conn.Read(buf)
    pair, _ := agent.GetSelectedCandidatePair()
    agent.Close()

Here is the same with trice (trio), both sides in one process, on loopback only.
"""

from __future__ import annotations

import trio

import trice

# NetworkTypes UDP4, and loopback only (Pion leaves loopback out unless IncludeLoopback).
LOOPBACK = trice.NetworkConfig(
    ip_filter=lambda ip: ip.is_loopback, include_loopback=True, ipv6=False
)


async def watch(name: str, agent: trice.Agent, peer: trice.Agent) -> None:
    """Pion's OnCandidate and OnConnectionStateChange (and OnSelectedCandidatePairChange):
    one subscription carries them all, as events, in order, and never stalls the agent."""
    async with agent.subscribe() as events:
        async for event in events:
            if isinstance(event, trice.CandidateGathered):
                # The signaling, in-process.  Pion's c.Marshal() leaves out "candidate:",
                # which to_sdp() writes; from_sdp() reads either (and Pion's Unmarshal too).
                line = event.candidate.to_sdp()
                peer.add_remote_candidate(trice.Candidate.from_sdp(line))
            elif event == trice.GatheringStateChanged(trice.GatheringState.COMPLETE):
                # Pion's OnCandidate(nil).  Pion's peer has no call for it; trice's uses it
                # to fail a pair list that cannot work without waiting for failed_timeout.
                peer.add_remote_candidate(None)
            elif isinstance(event, trice.ConnectionStateChanged):
                print(f"{name}: ICE Connection State has changed: {event.state.value}")
                if event.state is trice.ConnectionState.CONNECTED:
                    return


async def main() -> None:
    config = trice.AgentConfig(network=LOOPBACK)
    # ice.NewAgent + GatherCandidates: an agent gathers as soon as it opens.  The role is
    # chosen here (Pion: Dial is controlling, Accept controlled).
    async with (
        trice.open_agent(config, controlling=True) as alice,
        trice.open_agent(config, controlling=False) as bob,
    ):
        connections: dict[str, trice.Connection] = {}

        async def connect(name: str, agent: trice.Agent) -> None:
            connections[name] = await agent.connect()  # Pion: Dial / Accept

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, "alice", alice, bob)
                nursery.start_soon(watch, "bob", bob, alice)
                # GetLocalUserCredentials, and the remote ones that Dial and Accept take.
                bob.set_remote_parameters(alice.local_parameters.ufrag, alice.local_parameters.pwd)
                alice.set_remote_parameters(bob.local_parameters.ufrag, bob.local_parameters.pwd)
                nursery.start_soon(connect, "alice", alice)
                nursery.start_soon(connect, "bob", bob)
        to_bob, to_alice = connections["alice"], connections["bob"]

        # conn.Write / conn.Read: one datagram a call, as Pion's ice.Conn.
        await to_bob.send(b"ping")
        print("bob got:", (await to_alice.receive()).decode())
        await to_alice.send(b"pong")
        print("alice got:", (await to_bob.receive()).decode())

        # GetSelectedCandidatePair, and GetCandidatePairsStats.
        pair = to_bob.selected_pair
        print(f"alice's pair: {pair.local.type.value} -> {pair.remote.type.value}")
        (stats,) = [s for s in alice.pair_statistics() if s.selected]
        print(f"alice's pair nominated: {stats.nominated}, checks sent: {stats.checks_sent}")
    # agent.Close(): leaving the block closed both agents, every socket and task.  Where
    # Pion's Write returns an error, a closed connection raises trio.ClosedResourceError.
    try:
        await to_bob.send(b"too late")
    except trio.ClosedResourceError:
        print("send after close: trio.ClosedResourceError")


if __name__ == "__main__":
    trio.run(main)
