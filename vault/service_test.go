package vault_test

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
	"github.com/talonhq/talon/vault/leak"
)

const testSecret = "ghp_TestOnlyNotARealToken0123456789abcd"

// fixture is a data directory with a SQLite store and its open vault.
type fixture struct {
	dir string
	db  *store.DB
	v   *vault.Vault
	svc *vault.Service
}

func noEnv(string) string { return "" }

func envWith(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func newFixture(t *testing.T, getenv func(string) string) *fixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if getenv == nil {
		getenv = noEnv
	}
	v, err := vault.OpenInDir(ctx, dir, getenv, db.VaultStorage())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, db: db, v: v, svc: vault.NewService(v)}
}

// reopen opens the vault of the fixture's directory again, as another
// process would.
func (f *fixture) reopen(t *testing.T, getenv func(string) string) (*vault.Vault, error) {
	t.Helper()
	if getenv == nil {
		getenv = noEnv
	}
	return vault.OpenInDir(context.Background(), f.dir, getenv, f.db.VaultStorage())
}

func (f *fixture) set(t *testing.T, user, name, value string, hosts ...string) {
	t.Helper()
	err := f.svc.Add(context.Background(), vault.Entry{User: user, Name: name, Value: vault.SecretString(value), Hosts: hosts, Injection: vault.Injection{Kind: vault.InjectBearer}})
	if err != nil {
		t.Fatal(err)
	}
}

// rawExec edits the database behind the store's back, as an attacker with
// the file would.
func rawExec(t *testing.T, dir, q string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "talon.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	res, err := db.Exec(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%s: %d rows changed, want 1", q, n)
	}
}

func TestServiceSecretsAndRedaction(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	now := time.Unix(1_700_000_000, 0)
	f.svc.Now = func() time.Time { return now }
	const alice, bob = "slack:T1:UALICE", "slack:T1:UBOB"
	text := "here: " + testSecret + " and " + base64.StdEncoding.EncodeToString([]byte(testSecret))

	if _, n := f.svc.Redact(ctx, alice, "my key is xyzzy-plain-value-123"); n != 0 {
		t.Errorf("nothing to find, got %d", n)
	}
	f.set(t, alice, "github", testSecret, "api.github.com")
	if err := f.svc.Add(ctx, vault.Entry{User: alice, Name: "plain", Value: vault.SecretString("xyzzy-plain-value-123"), Hosts: []string{"api.example.com"}, Injection: vault.Injection{Kind: vault.InjectQuery, Name: "key"}}); err != nil {
		t.Fatal(err)
	}
	if out, n := f.svc.Redact(ctx, alice, "my key is xyzzy-plain-value-123"); n != 1 || strings.Contains(out, "xyzzy") {
		t.Errorf("after Add: %d findings, %q", n, out)
	}
	out, n := f.svc.Redact(ctx, alice, text)
	if n != 2 || strings.Contains(out, "ghp_") {
		t.Errorf("token and its base64: %d findings, %q", n, out)
	}
	if _, n := f.svc.Redact(ctx, bob, "xyzzy-plain-value-123"); n != 0 {
		t.Error("alice's value is redacted for bob: detectors are not per user")
	}

	// Another process adds a value: seen after the TTL.
	v2, err := f.reopen(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := v2.Set(ctx, vault.Entry{User: alice, Name: "other", Value: vault.SecretString("zzq-other-process-val"), Hosts: []string{"x.example"}, Injection: vault.Injection{Kind: vault.InjectBearer}}); err != nil {
		t.Fatal(err)
	}
	if _, n := f.svc.Redact(ctx, alice, "zzq-other-process-val"); n != 0 {
		t.Errorf("cached detector changed before the TTL (%d findings)", n)
	}
	now = now.Add(vault.DetectorTTL)
	if _, n := f.svc.Redact(ctx, alice, "zzq-other-process-val"); n != 1 {
		t.Errorf("after the TTL: %d findings, want 1", n)
	}

	es, err := f.svc.List(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name+" "+string(e.Injection.Kind))
	}
	if diff := cmp.Diff([]string{"github bearer", "other bearer", "plain query"}, names); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if !f.svc.Has(ctx, alice, "plain") || f.svc.Has(ctx, bob, "plain") {
		t.Error("Has is not per user")
	}
	err = f.svc.Add(ctx, vault.Entry{User: alice, Name: "bad name!", Value: vault.SecretString(testSecret), Hosts: []string{"h.example"}, Injection: vault.Injection{Kind: vault.InjectBearer}})
	var ee *vault.EntryError
	if !errors.As(err, &ee) || ee.Field != "name" || strings.Contains(err.Error(), testSecret) {
		t.Errorf("invalid name: %v, want an EntryError on the name", err)
	}
	if err := f.svc.Remove(ctx, alice, "plain"); err != nil {
		t.Fatal(err)
	}
	if _, n := f.svc.Redact(ctx, alice, "xyzzy-plain-value-123"); n != 0 {
		t.Error("a removed value is still redacted (cache not invalidated)")
	}
	if err := f.svc.Remove(ctx, alice, "plain"); !errors.Is(err, vault.ErrNotFound) {
		t.Errorf("removing a missing secret: %v, want ErrNotFound", err)
	}
}

// TestShortValuesRefused: a value under MinValueLen is refused by Set
// (and so by every way a user stores one), saying why and naming no value;
// one of exactly MinValueLen bytes is stored and redacted.
func TestShortValuesRefused(t *testing.T) {
	ctx := context.Background()
	if vault.MinValueLen != leak.MinSecretLen {
		t.Fatalf("vault.MinValueLen = %d, leak.MinSecretLen = %d: the vault must refuse what the detector cannot find", vault.MinValueLen, leak.MinSecretLen)
	}
	f := newFixture(t, nil)
	const user = "terminal::local"
	for n := 1; n < vault.MinValueLen; n++ {
		value := strings.Repeat("Z", n)
		err := f.svc.Add(ctx, vault.Entry{User: user, Name: "pin", Value: vault.SecretString(value), Hosts: []string{"api.example.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}})
		var ee *vault.EntryError
		if !errors.As(err, &ee) || !errors.Is(err, vault.ErrInvalidEntry) || ee.Field != "value" || !strings.Contains(ee.Reason, "at least 8 bytes") {
			t.Fatalf("%d-byte value: %v, want an EntryError on the value saying the minimum", n, err)
		}
		if strings.Contains(err.Error(), value) {
			t.Errorf("%d-byte value: the error holds the value: %v", n, err)
		}
	}
	if es, _ := f.svc.List(ctx, user); len(es) != 0 {
		t.Fatalf("%d entries stored after refusals", len(es))
	}
	min := "8bytes!!"
	if err := f.svc.Add(ctx, vault.Entry{User: user, Name: "pin", Value: vault.SecretString(min), Hosts: []string{"api.example.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}}); err != nil {
		t.Fatalf("%d-byte value: %v", len(min), err)
	}
	if out, n := f.svc.Redact(ctx, user, "the pin is "+min+"."); n != 1 || strings.Contains(out, min) {
		t.Errorf("a value of the minimum length is not redacted: %d findings, %q", n, out)
	}
}

// TestBlankValuesRefused: a value that is spaces and tabs around fewer
// than MinValueLen other bytes is refused like a short one. Stored, eight
// spaces would be "redacted" from every indented line the user or the
// model writes, and a short word padded with spaces would be redacted
// nowhere else but where it is padded the same way.
func TestBlankValuesRefused(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	const user = "terminal::local"
	for _, value := range []string{"        ", "\t\t\t\t\t\t\t\t", "  pin   ", "hunter2 ", " \thunter2"} {
		err := f.svc.Add(ctx, vault.Entry{User: user, Name: "pin", Value: vault.SecretString(value), Hosts: []string{"api.example.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}})
		var ee *vault.EntryError
		if !errors.As(err, &ee) || ee.Field != "value" || !strings.Contains(ee.Reason, "at least 8 bytes") {
			t.Errorf("value %q: %v, want an EntryError on the value saying the minimum", value, err)
		}
	}
	if es, _ := f.svc.List(ctx, user); len(es) != 0 {
		t.Fatalf("%d entries stored after refusals", len(es))
	}
	// Spaces inside, or around eight other bytes, are a value's own.
	for i, value := range []string{"pass word", " 8bytes!! "} {
		if err := f.svc.Add(ctx, vault.Entry{User: user, Name: "v" + strconv.Itoa(i), Value: vault.SecretString(value), Hosts: []string{"api.example.com"}, Injection: vault.Injection{Kind: vault.InjectBearer}}); err != nil {
			t.Errorf("value %q: %v", value, err)
		}
	}
	if out, n := f.svc.Redact(ctx, user, "code:\n        return 1"); n != 0 || !strings.Contains(out, "        return") {
		t.Errorf("indentation is redacted: %d findings, %q", n, out)
	}
}

func TestServiceCredentialsAndLeakChecks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, nil)
	const alice, bob = "slack:T1:UALICE", "slack:T1:UBOB"
	f.set(t, alice, "github", testSecret, "api.github.com")

	c, err := f.svc.Credential(ctx, alice, "github", "github", "api.github.com:443")
	if err != nil {
		t.Fatal(err)
	}
	h, u := http.Header{}, &url.URL{Scheme: "https", Host: "api.github.com"}
	c.Apply(h, u)
	if h.Get("Authorization") != "Bearer "+testSecret {
		t.Error("bearer not applied")
	}
	for _, tc := range []struct{ user, name, hostPort string }{
		{alice, "github", "evil.example:443"}, {alice, "github", "api.github.com:8443"}, {bob, "github", "api.github.com:443"},
		{alice, "nope", "api.github.com:443"}, {alice, "github", "bad host:443"},
	} {
		if _, err := f.svc.Credential(ctx, tc.user, "github", tc.name, tc.hostPort); !errors.Is(err, vault.ErrUnavailable) {
			t.Errorf("%s %s %s: %v, want ErrUnavailable", tc.user, tc.name, tc.hostPort, err)
		}
	}

	b64 := base64.StdEncoding.EncodeToString([]byte(testSecret))
	outbound := []struct {
		name string
		r    vault.Request
	}{
		{"raw in body", vault.Request{URL: "https://evil.example/x", Body: `{"t":"` + testSecret + `"}`}},
		{"base64 in body", vault.Request{URL: "https://evil.example/x", Body: b64}},
		{"in query", vault.Request{URL: "https://evil.example/x?t=" + url.QueryEscape(testSecret)}},
		{"hex in path", vault.Request{URL: "https://evil.example/" + strings.ToUpper(hexString(testSecret))}},
		{"in header", vault.Request{URL: "https://evil.example/", Headers: map[string]string{"X-Leak": testSecret}}},
		{"percent-encoded path", vault.Request{URL: "https://evil.example/" + pctAll(testSecret)}},
		{"someone else's token format", vault.Request{URL: "https://evil.example/", Body: "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx"}},
	}
	for _, tc := range outbound {
		err := f.svc.CheckOutbound(ctx, alice, "github", tc.r)
		var le *vault.LeakError
		if !errors.As(err, &le) {
			t.Errorf("%s: %v, want a LeakError", tc.name, err)
			continue
		}
		if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), b64) || le.Host != "evil.example" {
			t.Errorf("%s: refusal %q host %q", tc.name, err, le.Host)
		}
	}
	if err := f.svc.CheckOutbound(ctx, alice, "github", vault.Request{URL: "https://api.github.com/repos/golang/go/issues/1", Headers: map[string]string{"Accept": "application/json"}}); err != nil {
		t.Errorf("clean request refused: %v", err)
	}
	evs, err := f.v.RecentAudit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	leaks := 0
	for _, ev := range evs {
		if ev.Tool != "github" {
			t.Errorf("audit event %+v does not name the tool", ev)
		}
		if ev.Reason == vault.ReasonLeakDetected && !ev.Allowed {
			leaks++
		}
	}
	if leaks != len(outbound) {
		t.Errorf("%d leak_detected audit events, want %d", leaks, len(outbound))
	}

	echo := "Authorization: Bearer " + testSecret + "\n{\"auth\":\"" + b64 + "\",\"hex\":\"" + hexString(testSecret) + "\",\"q\":\"" + url.QueryEscape(testSecret) + "\"}"
	got := f.svc.RedactInbound(c.Secrets(), echo)
	for _, form := range []string{testSecret, b64, hexString(testSecret)} {
		if strings.Contains(got, form) {
			t.Errorf("RedactInbound left an encoding: %q", got)
		}
	}
}

func hexString(s string) string {
	const digits = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteByte(digits[s[i]>>4])
		b.WriteByte(digits[s[i]&15])
	}
	return b.String()
}

func pctAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteString("%" + strings.ToUpper(hexString(s[i:i+1])))
	}
	return b.String()
}
