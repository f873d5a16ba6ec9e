// Package natstest gives tests a NATS server with JetStream: the one set-up
// every test on NATS uses (cluster, adapters/slack, cmd/talon). It is
// imported by tests only.
package natstest

import (
	"os"
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
