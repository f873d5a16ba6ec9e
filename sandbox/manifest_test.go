package sandbox

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/sandbox/egress"
)

func TestParseManifestDefaults(t *testing.T) {
	m, err := ParseManifest("tools/http_fetch.yaml", []byte(`
name: http_fetch
description: Fetch a page.
parameters:
  type: object
  properties:
    url: {type: string}
  required: [url]
http:
  - host: "*"
    methods: [GET]
credentials: [github]
limits:
  deadline: 5s
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Manifest{
		Name: "http_fetch", Description: "Fetch a page.", Enabled: true,
		Parameters:  json.RawMessage(`{"properties":{"url":{"type":"string"}},"required":["url"],"type":"object"}`),
		HTTP:        []egress.Rule{{Host: "*", Methods: []string{"GET"}}},
		Credentials: []string{"github"},
		Approval:    ApproveNever,
		Limits: Limits{Deadline: 5 * time.Second, MemoryMiB: 64, MaxOutputBytes: 1 << 20, MaxHTTPRequests: 16,
			PerMinute: 60, MaxResponseBytes: 5 << 20, MaxRequestBytes: 1 << 20, MaxFileBytes: 8 << 20},
	}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseManifestErrors(t *testing.T) {
	tests := []struct {
		name, file, yaml string
		// want are substrings the error must contain, every one.
		want []string
	}{
		{"unknown key", "x.yaml", "name: x\ndescription: d\nnetwork: true\n", []string{"x.yaml", "network"}},
		{"unknown nested key", "x.yaml", "name: x\ndescription: d\nlimits: {cpu: 1}\n", []string{"x.yaml", "cpu"}},
		{"unknown rule key", "x.yaml", "name: x\ndescription: d\nhttp: [{host: a, port: 1}]\n", []string{"x.yaml", "port"}},
		{"name differs from file", "y.yaml", "name: x\ndescription: d\n", []string{"y.yaml: name", `"x"`}},
		{"bad name", "X-1.yaml", "name: X-1\ndescription: d\n", []string{"X-1.yaml: name"}},
		{"everything at once", "x.yaml", `
name: x
approval: sometimes
parameters: {type: string}
http: [{methods: [get]}, {host: a, scheme: ftp, path_prefixes: [api]}]
credentials: [""]
limits: {deadline: 11m, memory_mib: 0, max_output_bytes: -1, max_http_requests: 1001, per_minute: 0,
  max_response_bytes: 999999999, max_request_bytes: -5}
`, []string{"x.yaml: description", "x.yaml: approval", "x.yaml: parameters", "x.yaml: http[0].host",
			"x.yaml: http[0].methods[0]", "x.yaml: http[1].scheme", "x.yaml: http[1].path_prefixes[0]",
			"x.yaml: credentials[0]", "x.yaml: limits.deadline", "x.yaml: limits.memory_mib",
			"x.yaml: limits.max_output_bytes", "x.yaml: limits.max_http_requests", "x.yaml: limits.per_minute",
			"x.yaml: limits.max_response_bytes", "x.yaml: limits.max_request_bytes"}},
		{"empty", "x.yaml", "", []string{"x.yaml: empty manifest"}},
		{"trusted any host", "x.yaml", "name: x\ndescription: d\nhttp: [{host: \"*\", trusted: true}]\n", []string{"x.yaml: http[0].trusted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseManifest(tt.file, []byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoadTools(t *testing.T) {
	builtin := fstest.MapFS{
		"echo.wasm":  {Data: fixture.wasm["echo"]},
		"echo.yaml":  {Data: []byte("name: echo\ndescription: built-in echo\n")},
		"state.wasm": {Data: fixture.wasm["state"]},
		"state.yaml": {Data: []byte("name: state\ndescription: built-in state\n")},
	}
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The operator overrides echo's manifest wholly, disables state and
	// adds a tool of its own.
	write("echo.yaml", []byte("name: echo\ndescription: operator echo\nlimits: {deadline: 1s}\n"))
	write("state.yaml", []byte("name: state\ndescription: off\nenabled: false\n"))
	write("secret.wasm", fixture.wasm["secret"])
	write("secret.yaml", []byte("name: secret\ndescription: operator secret\ncredentials: [github]\n"))

	tools, err := LoadTools(builtin, dir)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		Name, Description, Source string
		Enabled                   bool
		Deadline                  time.Duration
	}
	var got []row
	for _, tl := range tools {
		got = append(got, row{tl.Manifest.Name, tl.Manifest.Description, tl.Source, tl.Manifest.Enabled, tl.Manifest.Limits.Deadline})
	}
	want := []row{
		{"echo", "operator echo", "builtin", true, time.Second},
		{"secret", "operator secret", filepath.Join(dir, "secret.wasm"), true, 30 * time.Second},
		{"state", "off", "builtin", false, 30 * time.Second},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// A Runtime serves only the enabled ones.
	r := newRuntime(t, Config{Tools: tools})
	listed, _ := r.Tools(t.Context(), alice)
	var names []string
	for _, l := range listed {
		names = append(names, l.Name)
	}
	if diff := cmp.Diff([]string{"echo", "secret"}, names); diff != "" {
		t.Errorf("Tools (-want +got):\n%s", diff)
	}
}

func TestLoadToolsErrors(t *testing.T) {
	builtin := fstest.MapFS{
		"lonely.wasm": {Data: fixture.wasm["echo"]},
	}
	dir := t.TempDir()
	for name, data := range map[string]string{
		"orphan.yaml":  "name: orphan\ndescription: no module\n",
		"nomanif.wasm": "\x00asm",
		"bad.yaml":     "name: bad\ndescription: d\nextra: 1\n",
		"bad.wasm":     "\x00asm",
		"notes.txt":    "ignored",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := LoadTools(builtin, dir)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"lonely.wasm: no default manifest", "orphan.yaml: no module", "nomanif.wasm: no manifest", "bad.yaml", "extra"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}
