package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// memStorage is an in-memory Storage with the semantics of the SQLite one.
type memStorage struct {
	mu      sync.Mutex
	entries map[[2]string]SealedEntry
	check   []byte
	audit   []AuditEvent
	touched map[[2]string]time.Time
}

func newMem() *memStorage {
	return &memStorage{entries: map[[2]string]SealedEntry{}, touched: map[[2]string]time.Time{}}
}

func (m *memStorage) PutEntry(_ context.Context, e SealedEntry) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[[2]string{e.User, e.Name}] = e
	return nil
}

func (m *memStorage) GetEntry(_ context.Context, user, name string) (SealedEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[[2]string{user, name}]
	if !ok {
		return SealedEntry{}, ErrNotFound
	}
	return e, nil
}

func (m *memStorage) ListEntries(_ context.Context, user string) ([]SealedEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []SealedEntry
	for k, e := range m.entries {
		if user == "" || k[0] == user {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memStorage) DeleteEntry(_ context.Context, user, name string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.entries[[2]string{user, name}]
	delete(m.entries, [2]string{user, name})
	return ok, nil
}

func (m *memStorage) ReplaceAll(_ context.Context, es []SealedEntry, check []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries = map[[2]string]SealedEntry{}
	for _, e := range es {
		m.entries[[2]string{e.User, e.Name}] = e
	}
	m.check = check
	return nil
}

func (m *memStorage) Rewrite(_ context.Context, remove, add []SealedEntry, events []AuditEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range remove {
		cur, ok := m.entries[[2]string{e.User, e.Name}]
		if !ok || !bytes.Equal(cur.Nonce, e.Nonce) {
			return fmt.Errorf("entry %q of %s: %w", e.Name, e.User, ErrConflict)
		}
	}
	for _, e := range remove {
		delete(m.entries, [2]string{e.User, e.Name})
	}
	for _, e := range add {
		m.entries[[2]string{e.User, e.Name}] = e
	}
	m.audit = append(m.audit, events...)
	return nil
}

func (m *memStorage) RecentAudit(_ context.Context, limit int) ([]AuditEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []AuditEvent
	for i := len(m.audit) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, m.audit[i])
	}
	return out, nil
}

func (m *memStorage) KeyCheck(context.Context) ([]byte, error) { return m.check, nil }
func (m *memStorage) SetKeyCheck(_ context.Context, c []byte) error {
	m.check = c
	return nil
}
func (m *memStorage) AppendAudit(_ context.Context, ev AuditEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audit = append(m.audit, ev)
	return nil
}
func (m *memStorage) Touch(_ context.Context, user, name string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.touched[[2]string{user, name}] = at
	return nil
}

func TestVaultCredentialIsHostBoundAndAudited(t *testing.T) {
	ctx := context.Background()
	st := newMem()
	v, err := New(ctx, mustKey(t), st)
	if err != nil {
		t.Fatal(err)
	}
	const user = "slack:T1:U1"
	if err := v.Set(ctx, Entry{User: user, Name: "github", Value: SecretString("ghp_value_for_test_1234567890"), Hosts: []string{"api.github.com"}, Injection: Injection{Kind: InjectBearer}}); err != nil {
		t.Fatal(err)
	}
	e, err := v.Credential(ctx, user, "github", "API.GitHub.com.", "https", "github")
	if err != nil {
		t.Fatalf("bound host: %v", err)
	}
	h, u := http.Header{}, &url.URL{}
	e.Apply(h, u)
	if h.Get("Authorization") != "Bearer ghp_value_for_test_1234567890" {
		t.Errorf("Apply did not set the bearer header")
	}
	cases := []struct {
		user, name, host, scheme string
		want                     Reason
		is                       error
	}{
		{user, "github", "evil.example", "https", ReasonHostNotBound, ErrHostNotBound},
		{user, "github", "api.github.com", "http", ReasonNotHTTPS, nil},
		{"slack:T1:U2", "github", "api.github.com", "https", ReasonNoEntry, ErrNotFound},
	}
	for _, c := range cases {
		_, err := v.Credential(ctx, c.user, c.name, c.host, c.scheme, "github")
		if err == nil || (c.is != nil && !errors.Is(err, c.is)) {
			t.Errorf("%+v: got %v", c, err)
		}
		last := st.audit[len(st.audit)-1]
		if last.Allowed || last.Reason != c.want {
			t.Errorf("%+v: audit %+v", c, last)
		}
	}
	if st.audit[0].Reason != ReasonInjected || !st.audit[0].Allowed {
		t.Errorf("first audit: %+v", st.audit[0])
	}
}

func TestVaultWrongKeyAndRotation(t *testing.T) {
	ctx := context.Background()
	st := newMem()
	k1 := mustKey(t)
	v, err := New(ctx, k1, st)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if err := v.Set(ctx, Entry{User: "terminal::local", Name: n, Value: SecretString("value-" + n + "-xxxxxxxx"), Hosts: []string{"example.com"}, Injection: Injection{Kind: InjectBearer}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(ctx, mustKey(t), st); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: got %v, want ErrWrongKey", err)
	}
	k2 := mustKey(t)
	n, err := v.Rotate(ctx, k2)
	if err != nil || n != 2 {
		t.Fatalf("Rotate: %d, %v", n, err)
	}
	if _, err := New(ctx, k1, st); !errors.Is(err, ErrWrongKey) {
		t.Errorf("old key after rotation: got %v, want ErrWrongKey", err)
	}
	v2, err := New(ctx, k2, st)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := v2.Values(ctx, "terminal::local")
	if err != nil || len(vals) != 2 {
		t.Fatalf("values after rotation: %d, %v", len(vals), err)
	}
	for _, s := range st.entries {
		if _, err := Open(k1, s); err == nil {
			t.Error("the old key still opens an entry")
		}
	}
}
