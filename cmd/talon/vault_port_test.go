package main

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/talonhq/talon/vault"
)

// writeHTTPRequestManifest enables the built-in http_request tool in
// toolsDir for GET and POST to the https authorities given, granting the
// credential names given.
func writeHTTPRequestManifest(t *testing.T, toolsDir string, credentials []string, authorities ...string) {
	t.Helper()
	builtin, err := os.ReadFile("../../sandbox/tools/http_request.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rules := "http:"
	for _, a := range authorities {
		rules += fmt.Sprintf("\n  - {scheme: https, host: %q, methods: [GET, POST]}", a)
	}
	manifest := string(builtin)
	for old, repl := range map[string]string{
		"enabled: false":    "enabled: true",
		"approval: non_get": "approval: never",
		"credentials: []":   "credentials: [" + strings.Join(credentials, ", ") + "]",
		"http: []":          rules,
	} {
		if !strings.Contains(manifest, "\n"+old+"\n") {
			t.Fatalf("the built-in http_request manifest has no line %q", old)
		}
		manifest = strings.Replace(manifest, "\n"+old+"\n", "\n"+repl+"\n", 1)
	}
	if err := os.MkdirAll(toolsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(toolsDir, "http_request.yaml"), []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCredentialBoundToHostAndPort stores credentials with `talon vault
// set` and uses them with `talon tool run http_request` through the real
// egress broker, against an API served over TLS on a loopback port that is
// not 443. A credential bound to the bare host means port 443 and is not
// sent to another port; one bound to host:port is sent there.
func TestCredentialBoundToHostAndPort(t *testing.T) {
	var got recorder
	api := tlsServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.add(r, readAll(r))
		fmt.Fprint(w, `{"ok":true}`)
	}), "api.example.com")
	port := strconv.Itoa(api.Listener.Addr().(*net.TCPAddr).Port)
	authority := "api.example.com:" + port

	dir := t.TempDir()
	data, toolsDir := filepath.Join(dir, "data"), filepath.Join(dir, "tools")
	writeHTTPRequestManifest(t, toolsDir, []string{"bare", "explicit443", "ported", "wildcard"}, authority)
	cfg := writeConfig(t, dir, fmt.Sprintf("data_dir: %s\nsandbox:\n  tools_dir: %s\n  allow_private: [127.0.0.1/32]\n", data, toolsDir))
	roots := x509.NewCertPool()
	roots.AddCert(api.Certificate())
	key, _ := vault.GenerateKey()
	e := env{
		getenv:   testEnv(map[string]string{vault.EnvKey: key.Encode()}),
		resolver: loopbackResolver{"api.example.com": true},
		rootCAs:  roots,
	}
	invoke := func(stdin string, args ...string) result {
		t.Helper()
		e := e
		e.stdin = strings.NewReader(stdin)
		return runMain(t, e, append(args, "--config", cfg)...)
	}
	if res := invoke("", "vault", "set", "--help"); res.code != 0 || !strings.Contains(res.stderr, "--host api.example.com\nmeans port 443, --host api.example.com:8443 port 8443") {
		t.Errorf("vault set --help (exit %d) does not say how a host's port is bound:\n%s", res.code, res.stderr)
	}
	values := map[string]string{}
	for name, host := range map[string]string{
		"bare": "api.example.com", "explicit443": "api.example.com:443", "ported": authority, "wildcard": "*.example.com",
	} {
		values[name] = "value-of-" + name + "-0123456789"
		if res := invoke(values[name]+"\n", "vault", "set", "--user", "terminal::local", name, "--host", host); res.code != 0 {
			t.Fatalf("vault set %s --host %s: exit %d %s", name, host, res.code, res.stderr)
		}
	}
	for _, tc := range []struct {
		name string
		sent bool
	}{
		{"bare", false}, {"explicit443", false}, {"wildcard", false}, {"ported", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := got.count()
			res := invoke("", "tool", "run", "http_request", "--user", "terminal::local",
				"--args", fmt.Sprintf(`{"url":"https://%s/v1/x","credential":%q}`, authority, tc.name))
			if tc.sent {
				if res.code != 0 {
					t.Fatalf("tool run: exit %d %s", res.code, res.stderr)
				}
				if want := "auth=Bearer " + values[tc.name]; !strings.Contains(got.all(), want) {
					t.Errorf("the API on port %s did not receive the credential bound to %s", port, authority)
				}
				return
			}
			if res.code == 0 || !strings.Contains(res.stderr, "not available for this host") {
				t.Errorf("exit %d, stderr %q; want a refusal saying the credential is not available for this host", res.code, res.stderr)
			}
			if got.count() != before {
				t.Errorf("the API on port %s received a request; a credential bound to port 443 must not be sent there", port)
			}
			if strings.Contains(got.all(), values[tc.name]) {
				t.Errorf("the API on port %s received the credential of %s", port, tc.name)
			}
		})
	}
}
