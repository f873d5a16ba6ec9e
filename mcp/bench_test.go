package mcp_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"slices"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/talonhq/talon/mcp"
)

// BenchmarkCallOverhead measures what Talon adds to an MCP tool call: each
// iteration makes one call of the same read-only tool on the same loopback
// TLS server through Talon's client (the broker's checks, the session
// lookup, the result's bounds) and one through a bare SDK client on a
// plain HTTP client (the baseline: the protocol and the server's own
// time), in alternating order, both on sessions opened before the timer.
// It reports the percentiles of the per-pair difference.
//
//	go test ./mcp -run '^$' -bench CallOverhead -benchtime 2000x -count 5
func BenchmarkCallOverhead(b *testing.B) {
	f := newFakeServer(b, nil)
	c, _, _ := newClient(b, f.Server, mcp.Server{Name: "bench"})
	ctx := context.Background()
	pool := x509.NewCertPool()
	pool.AddCert(f.Certificate())
	bare := sdk.NewClient(&sdk.Implementation{Name: "bare", Version: "1"}, nil)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	cs, err := bare.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: f.URL + "/mcp", HTTPClient: hc}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	talonCall := func() {
		res, err := c.Run(ctx, call("bench__search", `{"query":"q"}`))
		if err != nil || res.IsError || res.Content != "found: q" {
			b.Fatalf("talon call = %+v, %v", res, err)
		}
	}
	bareCall := func() {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "search", Arguments: map[string]string{"query": "q"}})
		if err != nil || res.IsError {
			b.Fatalf("bare call = %+v, %v", res, err)
		}
	}
	talonCall() // open Talon's session and list the tools
	bareCall()

	over := make([]time.Duration, 0, b.N)
	bases := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var t, base time.Duration
		if i%2 == 0 {
			t, base = timed(talonCall), timed(bareCall)
		} else {
			base, t = timed(bareCall), timed(talonCall)
		}
		over = append(over, t-base)
		bases = append(bases, base)
	}
	b.StopTimer()
	slices.Sort(over)
	slices.Sort(bases)
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[min(len(d)-1, int(p*float64(len(d))))]) / 1e6
	}
	b.ReportMetric(pct(bases, 0.50), "base-p50-ms")
	b.ReportMetric(pct(bases, 0.99), "base-p99-ms")
	b.ReportMetric(pct(over, 0.50), "overhead-p50-ms")
	b.ReportMetric(pct(over, 0.99), "overhead-p99-ms")
	if n := f.sessions.Load(); n != 2 {
		b.Errorf("server saw %d sessions, want 2 (one each, reused)", n)
	}
}

func timed(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}
