package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/sandbox/egress"
	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// The vault's own behaviour is tested in package vault; these tests cover
// the command and the adapters that wire the service to the runtime, the
// sandbox and the egress broker.

const testSecret = "ghp_TestOnlyNotARealToken0123456789abcd"

// openTestVault opens a vault in a fresh data directory, as the gateway
// does.
func openTestVault(t *testing.T, getenv func(string) string) (dir string, db *store.DB, v *vault.Vault) {
	t.Helper()
	ctx := context.Background()
	dir = t.TempDir()
	db, err := store.Open(ctx, filepath.Join(dir, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if getenv == nil {
		getenv = testEnv(nil)
	}
	v, _, err = openVaultAt(ctx, getenv, dir, db.VaultStorage())
	if err != nil {
		t.Fatal(err)
	}
	return dir, db, v
}

func setEntry(t *testing.T, v *vault.Vault, user, name, value string, hosts ...string) {
	t.Helper()
	if err := v.Set(context.Background(), vault.Entry{User: user, Name: name, Value: vault.SecretString(value), Hosts: hosts, Injection: vault.Injection{Kind: vault.InjectBearer}}); err != nil {
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

func TestVaultRotateKeyFile(t *testing.T) {
	ctx := context.Background()
	dir, fdb, fv := openTestVault(t, nil)
	setEntry(t, fv, "terminal::local", "github", testSecret, "api.github.com")
	setEntry(t, fv, "slack:T1:U1", "jira", "jira-token-0123456789", "example.atlassian.net")
	oldKey, err := vault.LoadKeyFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, "data_dir: "+dir+"\n")
	fdb.Close()
	res := runMain(t, env{}, "vault", "rotate-key", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "re-sealed 2 entries") {
		t.Fatalf("rotate-key: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	db, err := store.Open(ctx, filepath.Join(dir, "talon.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, _, err := openVaultAt(ctx, testEnv(nil), dir, db.VaultStorage())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ user, name, host string }{{"terminal::local", "github", "api.github.com"}, {"slack:T1:U1", "jira", "example.atlassian.net"}} {
		if _, err := v.Credential(ctx, c.user, c.name, c.host, "https", ""); err != nil {
			t.Errorf("%s after rotation: %v", c.name, err)
		}
	}
	if _, err := vault.New(ctx, oldKey, db.VaultStorage()); !errors.Is(err, vault.ErrWrongKey) {
		t.Errorf("old key after rotation: %v, want ErrWrongKey", err)
	}
	es, _ := db.VaultStorage().ListEntries(ctx, "")
	for _, s := range es {
		if _, err := vault.Open(oldKey, s); err == nil {
			t.Error("the old key still opens an entry")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, vault.NewKeyFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", vault.NewKeyFileName, err)
	}
}

func TestVaultRotateKeyFromEnvironment(t *testing.T) {
	ctx := context.Background()
	k1, _ := vault.GenerateKey()
	k2, _ := vault.GenerateKey()
	dir, db, v1 := openTestVault(t, testEnv(map[string]string{vault.EnvKey: k1.Encode()}))
	setEntry(t, v1, "terminal::local", "github", testSecret, "api.github.com")
	cfg := writeConfig(t, dir, "data_dir: "+dir+"\n")
	res := runMain(t, env{getenv: testEnv(map[string]string{vault.EnvKey: k1.Encode()})}, "vault", "rotate-key", "--config", cfg)
	if res.code == 0 || !strings.Contains(res.stderr, vault.EnvNewKey) {
		t.Fatalf("rotate without the new key: exit %d %s", res.code, res.stderr)
	}
	res = runMain(t, env{getenv: testEnv(map[string]string{vault.EnvKey: k1.Encode(), vault.EnvNewKey: k2.Encode()})}, "vault", "rotate-key", "--config", cfg)
	if res.code != 0 || !strings.Contains(res.stdout, "set "+vault.EnvKey) {
		t.Fatalf("rotate: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if strings.Contains(res.stdout+res.stderr, k2.Encode()) {
		t.Error("the new key was printed")
	}
	if _, _, err := openVaultAt(ctx, testEnv(map[string]string{vault.EnvKey: k1.Encode()}), dir, db.VaultStorage()); err == nil {
		t.Error("the old key still opens the vault")
	}
	v, _, err := openVaultAt(ctx, testEnv(map[string]string{vault.EnvKey: k2.Encode()}), dir, db.VaultStorage())
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
	v, _, err := openVaultAt(ctx, testEnv(nil), data, db.VaultStorage())
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

// TestVaultAdapters checks what the adapters add to the service: agent's
// and the sandbox's errors and types, the egress broker's.
func TestVaultAdapters(t *testing.T) {
	ctx := context.Background()
	_, _, v := openTestVault(t, nil)
	s := vaultSecrets{newVaultService(v, zerolog.Nop()), zerolog.Nop()}
	eg := vaultEgress{s.s, zerolog.Nop()}
	alice, bob := mustPrincipal(t, "slack:T1:UALICE"), mustPrincipal(t, "slack:T1:UBOB")

	if err := s.AddSecret(ctx, alice, agent.NewSecret{Name: "github", Value: []byte(testSecret), Hosts: []string{"api.github.com"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSecret(ctx, alice, agent.NewSecret{Name: "jira", Value: []byte("jira-token-0123456789"), Hosts: []string{"x.atlassian.net"}, Injection: "header:x-api-key:Key "}); err != nil {
		t.Fatal(err)
	}
	infos, err := s.ListSecrets(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range infos {
		got = append(got, i.Name+": "+i.Injection+" "+strings.Join(i.Hosts, ","))
	}
	if diff := cmp.Diff([]string{"github: bearer api.github.com", `jira: header X-Api-Key (prefix "Key ") x.atlassian.net`}, got); diff != "" {
		t.Errorf("ListSecrets (-want +got):\n%s", diff)
	}
	if !s.Has(ctx, alice, "github") || s.Has(ctx, bob, "github") {
		t.Error("Has is not per principal")
	}
	if _, n := s.Redact(ctx, alice, "token "+testSecret); n != 1 {
		t.Errorf("Redact found %d, want 1", n)
	}

	// Refusals for what was entered are agent.SecretErrors naming the field.
	for _, tc := range []struct {
		ns    agent.NewSecret
		field string
	}{
		{agent.NewSecret{Name: "pin", Value: []byte("1234"), Hosts: []string{"api.example.com"}}, "value"},
		{agent.NewSecret{Name: "bad name", Value: []byte(testSecret), Hosts: []string{"api.example.com"}}, "name"},
		{agent.NewSecret{Name: "x", Value: []byte(testSecret), Hosts: []string{"bad host"}}, "hosts"},
		{agent.NewSecret{Name: "x", Value: []byte(testSecret), Hosts: []string{"api.example.com"}, Injection: "cookie:x"}, "injection"},
		{agent.NewSecret{Name: "x", Value: []byte(testSecret), Hosts: []string{"api.example.com"}, Injection: "header:Host"}, "injection"},
	} {
		err := s.AddSecret(ctx, alice, tc.ns)
		var se *agent.SecretError
		if !errors.As(err, &se) || se.Field != tc.field || se.Reason == "" {
			t.Errorf("AddSecret(%s, %q): %v, want a SecretError on %s", tc.ns.Name, tc.ns.Injection, err, tc.field)
		} else if strings.Contains(se.Reason, testSecret) || strings.Contains(se.Reason, "1234") {
			t.Errorf("the refusal holds the value: %q", se.Reason)
		}
	}
	if err := s.RemoveSecret(ctx, alice, "nope"); err == nil || !strings.Contains(err.Error(), `no secret named "nope"`) {
		t.Errorf("RemoveSecret of a missing name: %v", err)
	}

	aliceGH := egress.Caller{Tool: "github", Principal: alice}
	c, err := eg.Credential(ctx, aliceGH, "github", "api.github.com:443")
	if err != nil {
		t.Fatal(err)
	}
	h, u := http.Header{}, &url.URL{Scheme: "https", Host: "api.github.com"}
	c.Apply(h, u)
	if h.Get("Authorization") != "Bearer "+testSecret {
		t.Error("bearer not applied")
	}
	for _, tc := range []struct {
		p              agent.Principal
		name, hostPort string
	}{{alice, "github", "evil.example:443"}, {alice, "github", "api.github.com:8443"}, {bob, "github", "api.github.com:443"}, {alice, "nope", "api.github.com:443"}} {
		if _, err := eg.Credential(ctx, egress.Caller{Tool: "github", Principal: tc.p}, tc.name, tc.hostPort); !errors.Is(err, egress.ErrNoCredential) {
			t.Errorf("%v %s %s: %v, want ErrNoCredential", tc.p, tc.name, tc.hostPort, err)
		}
	}
	err = eg.CheckOutbound(ctx, aliceGH, egress.Request{Method: "POST", URL: "https://evil.example/x", Body: testSecret})
	var de *egress.DeniedError
	if !errors.As(err, &de) || de.Host != "evil.example" || !strings.Contains(de.Reason, "carries a secret") || strings.Contains(err.Error(), testSecret) {
		t.Errorf("CheckOutbound of a leak: %v, want a DeniedError for evil.example naming no value", err)
	}
	if err := eg.CheckOutbound(ctx, aliceGH, egress.Request{URL: "https://api.github.com/user"}); err != nil {
		t.Errorf("CheckOutbound of a clean request: %v", err)
	}
	if got := eg.RedactInbound(alice, c.Secrets(), "echo "+testSecret); strings.Contains(got, testSecret) {
		t.Errorf("RedactInbound = %q", got)
	}
}
