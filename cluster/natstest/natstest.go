// Package natstest gives tests a NATS server with JetStream: the one set-up
// every test on NATS uses (cluster, adapters/slack, cmd/talon). It is
// imported by tests only.
package natstest

import (
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EnvURL is the variable naming a real NATS server with JetStream, for the
// tests that run against one.
const EnvURL = "TALON_TEST_NATS"

// Server starts an in-process NATS server with JetStream, its store in
// tb.TempDir(), stopped when tb ends, and returns its URL.
func Server(tb testing.TB) string {
	tb.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: tb.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("the in-process NATS server did not start")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

// Real returns EnvURL's value, or skips tb with one line saying how to
// run it.
func Real(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		tb.Skip("set " + EnvURL + "=nats://127.0.0.1:4222 to run this test against a real NATS server with JetStream")
	}
	return u
}

// Restartable is an in-process NATS server with JetStream that can be
// stopped and started again on the same port and store directory, as a
// NATS host that restarts: its file-backed streams are kept, its
// memory-backed ones (the turn limit buckets) are lost.
type Restartable struct {
	tb   testing.TB
	opts server.Options
	mu   sync.Mutex
	s    *server.Server // guarded by mu; nil while stopped
}

// NewRestartable starts a Restartable, its store in tb.TempDir(), stopped
// when tb ends.
func NewRestartable(tb testing.TB) *Restartable {
	tb.Helper()
	r := &Restartable{tb: tb, opts: server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: tb.TempDir(), NoLog: true, NoSigs: true}}
	r.Start()
	// The same port at each start, so that the clients reconnect to it.
	r.opts.Port = r.s.Addr().(*net.TCPAddr).Port
	tb.Cleanup(r.Stop)
	return r
}

// URL is the server's URL, the same across restarts.
func (r *Restartable) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.opts.Port) }

// Start starts the server (again). It must be called from the test's
// goroutine.
func (r *Restartable) Start() {
	r.tb.Helper()
	opts := r.opts
	s, err := server.NewServer(&opts)
	if err != nil {
		r.tb.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		r.tb.Fatal("the in-process NATS server did not start")
	}
	r.mu.Lock()
	r.s = s
	r.mu.Unlock()
}

// Stop shuts the server down and waits until it has; a stopped server
// stays stopped.
func (r *Restartable) Stop() {
	r.mu.Lock()
	s := r.s
	r.s = nil
	r.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}
