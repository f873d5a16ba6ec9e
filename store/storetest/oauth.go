package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/talonhq/talon/store"
)

// OAuthStore is what the MCP authorization flow keeps in the store
// (mcp.OAuthStore, adapted by cmd); both stores implement it.
type OAuthStore interface {
	PutOAuthState(ctx context.Context, s store.OAuthState) error
	StartOAuthState(ctx context.Context, id, browser string, at time.Time) (store.OAuthState, bool, error)
	TakeOAuthState(ctx context.Context, id string) (store.OAuthState, error)
	SweepOAuthStates(ctx context.Context, before time.Time) (int, error)
	GetOAuthClient(ctx context.Context, server, issuer string) (store.OAuthClient, error)
	PutOAuthClient(ctx context.Context, c store.OAuthClient) error
	PutOAuthConnection(ctx context.Context, c store.OAuthConnection) error
	GetOAuthConnection(ctx context.Context, server, principal string) (store.OAuthConnection, error)
	DeleteOAuthConnection(ctx context.Context, server, principal string) (bool, error)
	OAuthConnections(ctx context.Context, server, principal string) ([]store.OAuthConnection, error)
}

var oauthTests = []test{
	{"OAuthStates", testOAuthStates},
	{"OAuthClients", testOAuthClients},
	{"OAuthConnections", testOAuthConnections},
}

func oauthState(id, principal, server string, expires time.Time) store.OAuthState {
	return store.OAuthState{ID: id, Principal: principal, Server: server, Verifier: "verifier-" + id, Issuer: "https://as.example",
		AuthURL: "https://as.example/authorize", TokenURL: "https://as.example/token", RevokeURL: "https://as.example/revoke",
		ClientID: "client", Resource: "https://mcp.example/mcp", Scopes: "read write", CreatedAt: day0, ExpiresAt: expires}
}

// A state keeps its principal and server; it is started once and taken
// once, by whichever replica; the expired ones are swept.
func testOAuthStates(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db.(OAuthStore)
	s1 := oauthState("h1", "slack:T1:U1", "linear", day0.Add(10*time.Minute))
	s2 := oauthState("h2", "slack:T1:U2", "notion", day0.Add(time.Minute))
	for _, s := range []store.OAuthState{s1, s2} {
		if err := db.PutOAuthState(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutOAuthState(ctx, s1); err == nil {
		t.Error("a state stored twice: no error")
	}
	other := e.replica(t).(OAuthStore)
	got, first, err := other.StartOAuthState(ctx, "h1", "browser-hash", day0.Add(time.Second))
	want := s1
	want.Browser, want.StartedAt = "browser-hash", day0.Add(time.Second)
	if err != nil || !first {
		t.Fatalf("StartOAuthState = first %v, %v; want the first start", first, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("started state (-want +got):\n%s", diff)
	}
	got, first, err = db.StartOAuthState(ctx, "h1", "another-browser", day0.Add(2*time.Second))
	if err != nil || first || got.Browser != "browser-hash" || !got.StartedAt.Equal(day0.Add(time.Second)) {
		t.Errorf("starting again = %+v, first %v, %v; want the first start's state, not first", got, first, err)
	}
	if _, _, err := db.StartOAuthState(ctx, "nope", "b", day0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("starting an unknown state: %v, want ErrNotFound", err)
	}

	taken, err := e.reopen(t).(OAuthStore).TakeOAuthState(ctx, "h1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, taken); diff != "" {
		t.Errorf("taken state (-want +got):\n%s", diff)
	}
	db = e.db.(OAuthStore)
	if _, err := other.TakeOAuthState(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("taking a state twice: %v, want ErrNotFound", err)
	}
	if n, err := db.SweepOAuthStates(ctx, day0.Add(2*time.Minute)); err != nil || n != 1 {
		t.Errorf("SweepOAuthStates = %d, %v; want 1 (h2 expired)", n, err)
	}
	if _, err := db.TakeOAuthState(ctx, "h2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("taking a swept state: %v, want ErrNotFound", err)
	}
}

// A registered client is kept per server and issuer, and replaced.
func testOAuthClients(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db.(OAuthStore)
	if _, err := db.GetOAuthClient(ctx, "linear", "https://as.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("no client yet: %v, want ErrNotFound", err)
	}
	c := store.OAuthClient{Server: "linear", Issuer: "https://as.example", ClientID: "id1", ClientSecret: "s1", RegisteredAt: day0}
	if err := db.PutOAuthClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.ClientID, c.ClientSecret, c.RegisteredAt = "id2", "", day0.Add(time.Hour)
	if err := db.PutOAuthClient(ctx, c); err != nil {
		t.Fatal(err)
	}
	db = e.reopen(t).(OAuthStore)
	if got, err := db.GetOAuthClient(ctx, "linear", "https://as.example"); err != nil || got != c {
		t.Errorf("GetOAuthClient = %+v, %v; want %+v", got, err, c)
	}
	if _, err := db.GetOAuthClient(ctx, "linear", "https://other.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("another issuer: %v, want ErrNotFound", err)
	}
}

// A connection is one per server and principal: replaced, listed by
// server or principal, deleted once.
func testOAuthConnections(t *testing.T, e *env) {
	ctx := context.Background()
	db := e.db.(OAuthStore)
	conn := func(server, principal string, exp time.Duration) store.OAuthConnection {
		return store.OAuthConnection{Server: server, Principal: principal, Issuer: "https://as.example", ClientID: "c",
			TokenURL: "https://as.example/token", RevokeURL: "https://as.example/revoke", Resource: "https://mcp.example/mcp", Scopes: "read",
			ExpiresAt: day0.Add(exp), ConnectedAt: day0, RefreshedAt: day0}
	}
	a1 := conn("linear", "slack:T1:U1", time.Hour)
	a2 := conn("notion", "slack:T1:U1", time.Hour)
	b1 := conn("linear", "slack:T1:U2", time.Hour)
	for _, c := range []store.OAuthConnection{a1, a2, b1} {
		if err := db.PutOAuthConnection(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	a1.ExpiresAt, a1.RefreshedAt = day0.Add(2*time.Hour), day0.Add(time.Hour) // a refresh
	if err := db.PutOAuthConnection(ctx, a1); err != nil {
		t.Fatal(err)
	}
	db = e.reopen(t).(OAuthStore)
	if got, err := db.GetOAuthConnection(ctx, "linear", "slack:T1:U1"); err != nil || got != a1 {
		t.Errorf("GetOAuthConnection = %+v, %v; want %+v", got, err, a1)
	}
	if _, err := db.GetOAuthConnection(ctx, "notion", "slack:T1:U2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob's notion: %v, want ErrNotFound", err)
	}
	for _, tt := range []struct {
		server, principal string
		want              []store.OAuthConnection
	}{
		{"", "", []store.OAuthConnection{a1, b1, a2}},
		{"linear", "", []store.OAuthConnection{a1, b1}},
		{"", "slack:T1:U1", []store.OAuthConnection{a1, a2}},
		{"notion", "slack:T1:U2", nil},
	} {
		got, err := db.OAuthConnections(ctx, tt.server, tt.principal)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("OAuthConnections(%q, %q) (-want +got):\n%s", tt.server, tt.principal, diff)
		}
	}
	if had, err := db.DeleteOAuthConnection(ctx, "linear", "slack:T1:U1"); err != nil || !had {
		t.Errorf("DeleteOAuthConnection = %v, %v; want true", had, err)
	}
	if had, err := db.DeleteOAuthConnection(ctx, "linear", "slack:T1:U1"); err != nil || had {
		t.Errorf("deleting again = %v, %v; want false", had, err)
	}
	if got, err := db.OAuthConnections(ctx, "linear", ""); err != nil || len(got) != 1 || got[0] != b1 {
		t.Errorf("linear's connections after the delete: %+v, %v; want bob's", got, err)
	}
}
