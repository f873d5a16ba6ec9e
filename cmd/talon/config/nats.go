package config

import (
	"net/url"
	"strings"
	"time"
)

// NATS configures the distribution of work over replicas (package
// cluster). Without a URL, every turn runs in this process.
type NATS struct {
	// URL is the NATS server with JetStream ("nats://host:4222"; several,
	// comma-separated, for a NATS cluster). It may carry credentials, so
	// it is a Secret: write ${NATS_URL}.
	URL Secret `yaml:"url" json:"url"`
	// Partitions is how many partitions sessions are hashed into (default
	// 32). Every replica must use the same; the first records it.
	Partitions int `yaml:"partitions" json:"partitions"`
	// LeaseTTL is how long a replica's lease on a partition lasts without
	// renewal (default 10 s): a dead replica's partitions are taken over
	// within about 1.2 times this. Every replica must use the same; one
	// with another refuses to start while leases are held.
	LeaseTTL Duration `yaml:"lease_ttl" json:"lease_ttl"`
	// Replica names this replica in the leases; "" means the host name
	// and a random suffix.
	Replica string `yaml:"replica" json:"replica"`
	// Prefix names the JetStream stream, subjects and KV buckets (default
	// "talon": stream TALON_IN, subjects talon.in.<p>, buckets
	// talon_partitions and talon_cluster), so that several deployments
	// can share one NATS server. Every replica must use the same.
	Prefix string `yaml:"prefix" json:"prefix"`
}

// Enabled reports whether work is distributed over NATS.
func (n NATS) Enabled() bool { return n.URL != "" }

// Servers returns the URLs of URL, for the NATS client.
func (n NATS) Servers() []string {
	var out []string
	for _, s := range strings.Split(n.URL.Reveal(), ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Hosts returns URL's host:port list without credentials, for messages.
func (n NATS) Hosts() string {
	var hosts []string
	for _, s := range n.Servers() {
		if u, err := url.Parse(s); err == nil {
			hosts = append(hosts, u.Host)
		}
	}
	return strings.Join(hosts, ",")
}

func defaultNATS() NATS {
	return NATS{Partitions: 32, LeaseTTL: Duration(10 * time.Second), Prefix: "talon"}
}

func (n *NATS) validate(v *validator) {
	v.intRange("nats.partitions", n.Partitions, 1, 1024)
	v.duration("nats.lease_ttl", n.LeaseTTL, 2*time.Second, time.Minute)
	if n.Replica != "" && !validReplica(n.Replica) {
		v.add("nats.replica", "must be 1 to 100 letters, digits, '-' or '_' (or \"\" for the host name and a random suffix)")
	}
	if !validReplica(n.Prefix) || len(n.Prefix) > 32 {
		v.add("nats.prefix", "must be 1 to 32 letters, digits, '-' or '_' (default talon)")
	}
	if !n.Enabled() {
		return
	}
	servers := n.Servers()
	if len(servers) == 0 || len(servers) > 32 {
		v.add("nats.url", "must name 1 to 32 servers, e.g. nats://127.0.0.1:4222")
	}
	for _, s := range servers {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			// Never quoted: the URL may carry a password.
			v.add("nats.url", "each server must be nats://host:port or tls://host:port (e.g. nats://127.0.0.1:4222)")
			break
		}
	}
}

func validReplica(s string) bool {
	if len(s) > 100 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}
