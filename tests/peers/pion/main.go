// pion-peer: a Pion ICE (github.com/pion/ice/v2) agent speaking the trice
// peer line protocol (JSON lines on stdin/stdout, logs on stderr).
//
// See tests/peers/harness.py for the protocol specification.
//
// It only ever gathers loopback host candidates (127.0.0.1, or ::1 with
// --ipv6), or -- with --turn ... --relay-only -- relayed candidates from the
// given TURN server.
//
// --mdns off|query|gather sets AgentConfig.MulticastDNSMode (Disabled, the
// default here, QueryOnly or QueryAndGather). Pion's mDNS joins 224.0.0.251
// and sends on EVERY interface of the host (net.Interfaces()), whatever the
// interface filter says, so query and gather are refused unless every
// interface is a loopback one (a network namespace whose only link is lo, as
// tests/test_mdns_interop.py makes). With gather, every host candidate
// carries the agent's one random <uuid>.local name (or --mdns-name's). Its
// "connected" messages also carry "remote_candidates": {"address", "port",
// "type"} of each remote candidate the agent holds.
//
// --tcp makes it an ICE-TCP agent (RFC 6544) instead of a UDP one: network type
// TCP4 and a TCPMux listening on 127.0.0.1:0, so it gathers one passive TCP host
// candidate ("... tcp ... typ host tcptype passive") on the listener's port. Pion
// 2.3 only does passive: it ignores remote "tcptype active" candidates (it learns
// the other side as a peer-reflexive tcp candidate, without tcptype, when its
// check arrives over an accepted connection); it pairs remote passive ones too but
// never dials, so their checks are never sent. The first packet on an accepted
// connection must be an RFC 4571 framed (2-byte length) STUN Binding message whose
// USERNAME starts with this agent's ufrag. Once any accepted connection ends (EOF
// or error), the candidate stops reading altogether. --tcp --ipv6 is refused:
// Pion 2.3 gathers TCP host candidates only on the addresses of its interface
// enumeration, which drops ::1 (see --ipv6 below), so it would gather none.
//
// Build offline (GOPATH mode, Debian's golang-github-pion-ice.v2-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o pion-peer .
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/logging"
)

type message struct {
	Type      string `json:"type"`
	Ufrag     string `json:"ufrag,omitempty"`
	Pwd       string `json:"pwd,omitempty"`
	Lite      bool   `json:"lite,omitempty"`
	Candidate string `json:"candidate,omitempty"`
	Count     int    `json:"count,omitempty"`
	Message   string `json:"message,omitempty"`
}

var (
	outMu sync.Mutex
	out   = bufio.NewWriter(os.Stdout)
)

func emit(v map[string]interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	_, _ = out.Write(b)
	_ = out.WriteByte('\n')
	_ = out.Flush()
}

func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "pion-peer: "+format+"\n", args...)
}

func fail(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	logf("error: %s", msg)
	emit(map[string]interface{}{"type": "error", "message": msg})
	os.Exit(1)
}

// candidateLine renders a candidate as an RFC 8839 attribute value
// ("candidate:..." without "a="). Pion's Marshal() omits the prefix.
func candidateLine(c ice.Candidate) string {
	return "candidate:" + c.Marshal()
}

// parseCandidate accepts "a=candidate:...", "candidate:..." or the bare value.
func parseCandidate(line string) (ice.Candidate, error) {
	s := strings.TrimSpace(line)
	s = strings.TrimPrefix(s, "a=")
	s = strings.TrimPrefix(s, "candidate:")
	return ice.UnmarshalCandidate(s)
}

// mdnsOn tells whether an --mdns value asks for multicast DNS.
func mdnsOn(mode string) bool { return mode != "off" }

// closeTCPMux closes the TCPMux (and its listener), waiting at most a second:
// TCPMuxDefault.Close waits for every connection handler, and one still reading
// the first packet of an accepted connection is not woken up by it.
func closeTCPMux(m *ice.TCPMuxDefault) {
	done := make(chan struct{})
	go func() {
		if err := m.Close(); err != nil {
			logf("closing the TCP mux: %v", err)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		logf("closing the TCP mux: still waiting for a connection after 1 s; exiting anyway")
	}
}

// remoteCandidates lists the agent's remote candidates (signalled, resolved from
// an mDNS name, or peer-reflexive) for the "remote_candidates" of "connected".
// Pion keeps a resolved candidate under its .local name, and lists it only once
// resolved.
func remoteCandidates(agent *ice.Agent) []map[string]interface{} {
	out := []map[string]interface{}{}
	for _, s := range agent.GetRemoteCandidatesStats() {
		out = append(out, map[string]interface{}{
			"address": s.IP,
			"port":    s.Port,
			"type":    s.CandidateType.String(),
		})
	}
	return out
}

// received counts data datagrams per exchange round. Payloads are
// "x<round>-<index>"; see harness.py.
type counter struct {
	mu     sync.Mutex
	cond   *sync.Cond
	counts map[int]int
}

func newCounter() *counter {
	c := &counter{counts: map[int]int{}}
	c.cond = sync.NewCond(&c.mu)
	return c
}

func (c *counter) add(round int) {
	c.mu.Lock()
	c.counts[round]++
	c.mu.Unlock()
	c.cond.Broadcast()
}

// wait blocks until round has at least n datagrams or the deadline passes.
func (c *counter) wait(round, n int, deadline time.Time) int {
	timer := time.AfterFunc(time.Until(deadline), func() { c.cond.Broadcast() })
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.counts[round] < n && time.Now().Before(deadline) {
		c.cond.Wait()
	}
	return c.counts[round]
}

func main() {
	controlling := flag.Bool("controlling", false, "act as the controlling agent")
	controlled := flag.Bool("controlled", false, "act as the controlled agent")
	ipv6 := flag.Bool("ipv6", false, "gather ::1 instead of 127.0.0.1")
	lite := flag.Bool("lite", false, "be an ICE lite agent")
	turnURL := flag.String("turn", "", "TURN server URL, e.g. turn:127.0.0.1:3478?transport=udp")
	turnUser := flag.String("username", "", "TURN username")
	turnCred := flag.String("credential", "", "TURN password")
	relayOnly := flag.Bool("relay-only", false, "only gather relayed candidates (needs --turn)")
	exchangeTimeout := flag.Duration("exchange-timeout", 5*time.Second, "how long to wait for the peer's datagrams")
	connectTimeout := flag.Duration("connect-timeout", 30*time.Second, "how long to wait for connectivity")
	mdnsName := flag.String("mdns-name", "", "with --mdns gather: the agent's .local name (AgentConfig.MulticastDNSHostName; default: a random <uuid>.local)")
	mdnsFlag := flag.String("mdns", "off", "multicast DNS: off (Disabled), query (QueryOnly) or gather (QueryAndGather); "+
		"query and gather use every interface of the host: only inside a network namespace of its own")
	tcp := flag.Bool("tcp", false, "ICE-TCP: gather a passive TCP host candidate (a TCPMux on 127.0.0.1) instead of UDP")
	alsoUDP := flag.Bool("also-udp", false, "with --tcp: gather the UDP host candidate too (network types udp4 and tcp4)")
	flag.Int("count", 0, "ignored (datagram count comes with the exchange message)")
	echo := flag.Bool("echo", false, "send every datagram received back (steady two-way data)")
	namespace := flag.Bool("namespace", false, "gather on every link but loopback (the NAT lab runs the peer in a network namespace of its own), IPv4 UDP only")
	stunURL := flag.String("stun", "", "STUN server URL, e.g. stun:203.0.113.2:3478: gather a server-reflexive candidate too")
	reportSelected := flag.Bool("report-selected", false, "a \"selected\" message (local, remote) each time the selected pair changes")
	flag.Parse()

	if *controlling == *controlled {
		fail("exactly one of --controlling / --controlled is required")
	}
	if *relayOnly && *turnURL == "" {
		fail("--relay-only needs --turn")
	}
	if *lite && *relayOnly {
		fail("a lite agent only has host candidates")
	}
	if *namespace && (*ipv6 || *tcp || mdnsOn(*mdnsFlag)) {
		fail("--namespace gathers IPv4 UDP host candidates only (no --ipv6, --tcp or --mdns)")
	}
	if *alsoUDP && !*tcp {
		fail("--also-udp goes with --tcp")
	}
	if *tcp && *relayOnly {
		fail("--tcp gathers TCP host candidates only; it cannot go with --relay-only")
	}
	if *tcp && *ipv6 {
		// Pion gathers a TCP host candidate for each address its interface enumeration
		// yields, and that drops ::1 (the UDP workaround, a mux, has no TCP counterpart:
		// a TCPMux does not announce its listen address).
		fail("--tcp --ipv6: Pion 2.3 drops ::1 from its interfaces, so it would gather no TCP candidate")
	}
	mdnsModes := map[string]ice.MulticastDNSMode{
		"off":    ice.MulticastDNSModeDisabled,
		"query":  ice.MulticastDNSModeQueryOnly,
		"gather": ice.MulticastDNSModeQueryAndGather,
	}
	mdnsMode, ok := mdnsModes[*mdnsFlag]
	if !ok {
		fail("--mdns must be off, query or gather, not %q", *mdnsFlag)
	}
	if mdnsMode != ice.MulticastDNSModeDisabled {
		// Pion's mDNS joins the group and sends on every interface, whatever the
		// interface filter says: only where lo is the only one.
		ifaces, err := net.Interfaces()
		if err != nil {
			fail("--mdns %s: cannot list the interfaces: %v", *mdnsFlag, err)
		}
		for _, ifc := range ifaces {
			if ifc.Flags&net.FlagLoopback == 0 {
				fail("--mdns %s: Pion's mDNS would use interface %s too; run it in a network namespace whose only link is lo", *mdnsFlag, ifc.Name)
			}
		}
	}
	if mdnsMode == ice.MulticastDNSModeQueryAndGather && *ipv6 {
		// (the --ipv6 host candidate comes from our UDP mux, which Pion signals under its
		// address, not under the mDNS name)
		fail("--mdns gather does not name the --ipv6 candidate (it comes from a UDP mux)")
	}

	netType := ice.NetworkTypeUDP4
	switch {
	case *tcp:
		netType = ice.NetworkTypeTCP4
	case *ipv6:
		netType = ice.NetworkTypeUDP6
	}
	disconnected := 10 * time.Second
	failed := 30 * time.Second
	keepalive := 2 * time.Second
	lf := logging.NewDefaultLoggerFactory()
	lf.Writer = os.Stderr // Pion logs to stdout by default, which is our protocol channel
	lf.DefaultLogLevel = logging.LogLevelWarn
	if os.Getenv("PION_PEER_DEBUG") != "" {
		lf.DefaultLogLevel = logging.LogLevelTrace
	}
	networkTypes := []ice.NetworkType{netType}
	if *tcp && *alsoUDP {
		networkTypes = []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeTCP4}
	}
	cfg := &ice.AgentConfig{
		NetworkTypes:         networkTypes,
		CandidateTypes:       []ice.CandidateType{ice.CandidateTypeHost},
		MulticastDNSMode:     mdnsMode,
		MulticastDNSHostName: *mdnsName,
		IncludeLoopback:      true,
		InterfaceFilter:      func(name string) bool { return name == "lo" },
		IPFilter:             func(ip net.IP) bool { return ip.IsLoopback() },
		Lite:                 *lite,
		DisconnectedTimeout:  &disconnected,
		FailedTimeout:        &failed,
		KeepaliveInterval:    &keepalive,
		LoggerFactory:        lf,
	}
	if *namespace {
		// The namespace's own links, which the NAT lab made: never the machine's.
		cfg.IncludeLoopback = false
		cfg.InterfaceFilter = func(name string) bool { return name != "lo" }
		cfg.IPFilter = func(ip net.IP) bool { return ip.To4() != nil && !ip.IsLoopback() }
	}
	if *stunURL != "" {
		u, err := ice.ParseURL(*stunURL)
		if err != nil || u.Scheme != ice.SchemeTypeSTUN {
			fail("bad --stun URL %q: %v", *stunURL, err)
		}
		cfg.Urls = append(cfg.Urls, u)
		cfg.CandidateTypes = append(cfg.CandidateTypes, ice.CandidateTypeServerReflexive)
	}
	if *turnURL != "" {
		u, err := ice.ParseURL(*turnURL)
		if err != nil {
			fail("bad --turn URL: %v", err)
		}
		u.Username = *turnUser
		u.Password = *turnCred
		cfg.Urls = append(cfg.Urls, u)
		if *relayOnly {
			cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeRelay}
		} else {
			cfg.CandidateTypes = append(cfg.CandidateTypes, ice.CandidateTypeRelay)
		}
	}
	if *tcp {
		// ICE-TCP: Pion's host candidate of network type TCP is the listening port of
		// the TCPMux (one per local IP the interface/IP filters let through: loopback
		// only), announced as "tcptype passive".
		l, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0})
		if err != nil {
			fail("cannot listen on TCP 127.0.0.1: %v", err)
		}
		tcpMux := ice.NewTCPMuxDefault(ice.TCPMuxParams{
			Listener:       l,
			Logger:         lf.NewLogger("tcpmux"),
			ReadBufferSize: 20,
		})
		cfg.TCPMux = tcpMux
		// Closed after the agent (defers run last first); the mux's Close also closes
		// the listener.
		defer closeTCPMux(tcpMux)
	} else if *ipv6 && !*relayOnly {
		// Pion 2.3's interface enumeration rejects ::1 (it treats it as an
		// "IPv4-compatible IPv6" address), so bind ::1 ourselves and hand it
		// over as a UDP mux, whose listen address becomes the host candidate.
		pc, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback, Port: 0})
		if err != nil {
			fail("cannot bind [::1]: %v", err)
		}
		cfg.UDPMux = ice.NewUDPMuxDefault(ice.UDPMuxParams{
			UDPConn: pc,
			Logger:  lf.NewLogger("udpmux"),
		})
	}

	agent, err := ice.NewAgent(cfg)
	if err != nil {
		fail("NewAgent: %v", err)
	}
	defer agent.Close() //nolint:errcheck

	ufrag, pwd, err := agent.GetLocalUserCredentials()
	if err != nil {
		fail("GetLocalUserCredentials: %v", err)
	}
	emit(map[string]interface{}{"type": "parameters", "ufrag": ufrag, "pwd": pwd, "lite": *lite})

	if err := agent.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			emit(map[string]interface{}{"type": "end-of-candidates"})
			return
		}
		emit(map[string]interface{}{"type": "candidate", "candidate": candidateLine(c)})
	}); err != nil {
		fail("OnCandidate: %v", err)
	}
	// After an ICE restart (the "restart" message), the next "connected" state is
	// reported as a "connected" message again; restartedAt is when the restart began,
	// set once Restart has returned.  Pion delivers state changes from a goroutine of its
	// own, in order but late: the first connection's "connected" may come after the
	// restart, when Restart has cleared the selected pair; only one with a pair counts.
	var (
		restartMu   sync.Mutex
		restartedAt time.Time
	)
	if err := agent.OnConnectionStateChange(func(s ice.ConnectionState) {
		logf("connection state %s", s)
		if s != ice.ConnectionStateConnected {
			return
		}
		pair, err := agent.GetSelectedCandidatePair()
		if err != nil || pair == nil {
			return
		}
		restartMu.Lock()
		t0 := restartedAt
		restartedAt = time.Time{}
		restartMu.Unlock()
		if t0.IsZero() {
			return
		}
		emit(map[string]interface{}{
			"type":              "connected",
			"elapsed_ms":        float64(time.Since(t0).Nanoseconds()) / 1e6,
			"local":             candidateLine(pair.Local),
			"remote":            candidateLine(pair.Remote),
			"remote_candidates": remoteCandidates(agent),
		})
	}); err != nil {
		fail("OnConnectionStateChange: %v", err)
	}
	if *reportSelected {
		if err := agent.OnSelectedCandidatePairChange(func(local, remote ice.Candidate) {
			emit(map[string]interface{}{
				"type":   "selected",
				"local":  candidateLine(local),
				"remote": candidateLine(remote),
			})
		}); err != nil {
			fail("OnSelectedCandidatePairChange: %v", err)
		}
	}
	if err := agent.GatherCandidates(); err != nil {
		fail("GatherCandidates: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		remoteUfrag, remotePwd string
		started                bool
		added                  = map[string]string{} // remote candidates handed to the agent, each as its stats give it (see "sync")
		connMu                 sync.Mutex
		conn                   *ice.Conn
		connReady              = make(chan struct{})
		rounds                 int
		recv                   = newCounter()
	)

	startConnecting := func() {
		cctx, ccancel := context.WithTimeout(ctx, *connectTimeout)
		defer ccancel()
		// The clock runs around the connect call alone, inside the timeout guard (as in
		// the trice and aioice peers).
		t0 := time.Now()
		var c *ice.Conn
		var err error
		if *controlling {
			c, err = agent.Dial(cctx, remoteUfrag, remotePwd)
		} else {
			c, err = agent.Accept(cctx, remoteUfrag, remotePwd)
		}
		if err != nil {
			if errors.Is(err, ice.ErrCanceledByCaller) && ctx.Err() != nil {
				return
			}
			fail("connect: %v", err)
		}
		elapsed := float64(time.Since(t0).Nanoseconds()) / 1e6
		msg := map[string]interface{}{
			"type":         "connected",
			"elapsed_ms":   elapsed,
			"started_ns":   t0.UnixNano(),
			"connected_ns": time.Now().UnixNano(),
		}
		if pair, err := agent.GetSelectedCandidatePair(); err == nil && pair != nil {
			msg["local"] = candidateLine(pair.Local)
			msg["remote"] = candidateLine(pair.Remote)
		}
		msg["remote_candidates"] = remoteCandidates(agent)
		connMu.Lock()
		conn = c
		connMu.Unlock()
		close(connReady)
		emit(msg)

		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if *echo {
				if _, err := c.Write(buf[:n]); err != nil {
					logf("echo: %v", err)
				}
				continue
			}
			var round, idx int
			if _, err := fmt.Sscanf(string(buf[:n]), "x%d-%d", &round, &idx); err == nil {
				recv.add(round)
			}
		}
	}

	exchange := func(round, count int) {
		select {
		case <-connReady:
		case <-ctx.Done():
			return
		}
		connMu.Lock()
		c := conn
		connMu.Unlock()
		sent := 0
		for i := 0; i < count; i++ {
			if _, err := c.Write([]byte(fmt.Sprintf("x%d-%d", round, i))); err != nil {
				logf("write: %v", err)
				break
			}
			sent++
		}
		got := recv.wait(round, count, time.Now().Add(*exchangeTimeout))
		emit(map[string]interface{}{"type": "exchanged", "sent": sent, "received": got})
	}

	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" {
			continue
		}
		var m message
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			fail("bad input line %q: %v", line, err)
		}
		switch m.Type {
		case "parameters":
			remoteUfrag, remotePwd = m.Ufrag, m.Pwd
			if started {
				if err := agent.SetRemoteCredentials(m.Ufrag, m.Pwd); err != nil {
					fail("SetRemoteCredentials: %v", err)
				}
			}
		case "candidate":
			c, err := parseCandidate(m.Candidate)
			if err != nil {
				fail("bad candidate %q: %v", m.Candidate, err)
			}
			if err := agent.AddRemoteCandidate(c); err != nil {
				fail("AddRemoteCandidate: %v", err)
			}
			if c.TCPType() != ice.TCPTypeActive && !strings.HasSuffix(c.Address(), ".local") {
				// (One the agent's loop takes in, see "sync": once, as Pion keeps one of
				// candidates it holds Equal.)
				added[fmt.Sprintf("%s %s %s %d %s %v", c.NetworkType(), c.Type(), c.Address(),
					c.Port(), c.TCPType(), c.RelatedAddress())] = statsKey(c.NetworkType(),
					c.Address(), c.Port(), c.Type())
			}
		case "end-of-candidates":
			// Pion has no end-of-candidates signal; nothing to do.
		case "sync":
			// Everything before it on stdin has been handled, and the agent holds the
			// candidates: AddRemoteCandidate hands each to the agent's loop from a goroutine
			// of its own, which may not have run yet.  (A check of the peer's that came
			// first made Pion learn its address as peer-reflexive, and nominate it only
			// after the second it waits for such a candidate: a run of 1 s.)
			// Each is looked for by its address, not counted: a ".local" one resolved, or
			// one learned from a check, would stand in the count for one not yet taken.
			holds := func() bool {
				have := map[string]struct{}{}
				for _, s := range agent.GetRemoteCandidatesStats() {
					have[statsKey(s.NetworkType, s.IP, s.Port, s.CandidateType)] = struct{}{}
				}
				for _, key := range added {
					if _, ok := have[key]; !ok {
						return false
					}
				}
				return true
			}
			deadline := time.Now().Add(time.Second)
			held := holds()
			for !held && time.Now().Before(deadline) {
				time.Sleep(20 * time.Microsecond)
				held = holds()
			}
			emit(map[string]interface{}{"type": "synced", "held": held})
		case "start":
			if started {
				continue
			}
			if remoteUfrag == "" || remotePwd == "" {
				fail("start before remote parameters")
			}
			started = true
			go startConnecting()
		case "exchange":
			if !started {
				fail("exchange before start")
			}
			go exchange(rounds, m.Count)
			rounds++
		case "restart":
			// ICE restart: new credentials, and (Pion drops its candidates on a restart)
			// a new gathering; the description goes out as at the start, and the next
			// "connected" state is reported again.
			if !started {
				fail("restart before start")
			}
			t0 := time.Now()
			if err := agent.Restart("", ""); err != nil {
				fail("Restart: %v", err)
			}
			added = map[string]string{} // (Pion drops the peer's candidates on a restart)
			restartMu.Lock()
			restartedAt = t0
			restartMu.Unlock()
			ufrag, pwd, err := agent.GetLocalUserCredentials()
			if err != nil {
				fail("GetLocalUserCredentials: %v", err)
			}
			emit(map[string]interface{}{"type": "parameters", "ufrag": ufrag, "pwd": pwd, "lite": *lite})
			if err := agent.GatherCandidates(); err != nil {
				fail("GatherCandidates: %v", err)
			}
		case "close":
			logf("close requested")
			return
		default:
			logf("ignoring unknown message type %q", m.Type)
		}
	}
	if err := scanner.Err(); err != nil {
		fail("stdin: %v", err)
	}
}

// statsKey names a remote candidate as the agent's stats give it (see "sync").
func statsKey(network ice.NetworkType, address string, port int, kind ice.CandidateType) string {
	return fmt.Sprintf("%s %s %d %s", network, address, port, kind)
}
