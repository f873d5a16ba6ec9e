package agent_test

import (
	"errors"
	"flag"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent"
)

func TestParseInjection(t *testing.T) {
	cases := []struct {
		in   string
		want agent.Injection
		err  bool
	}{
		{"", agent.Injection{Kind: agent.InjectBearer}, false},
		{"bearer", agent.Injection{Kind: agent.InjectBearer}, false},
		{"header:x-api-key", agent.Injection{Kind: agent.InjectHeader, Name: "x-api-key"}, false},
		{"header:Authorization:token ", agent.Injection{Kind: agent.InjectHeader, Name: "Authorization", Prefix: "token "}, false},
		{"header:Authorization:a:b", agent.Injection{Kind: agent.InjectHeader, Name: "Authorization", Prefix: "a:b"}, false},
		{"query:api_key", agent.Injection{Kind: agent.InjectQuery, Name: "api_key"}, false},
		{"basic:alice", agent.Injection{Kind: agent.InjectBasic, Username: "alice"}, false},
		{"bearer:x", agent.Injection{}, true},
		{"header:", agent.Injection{}, true},
		{"header::p", agent.Injection{}, true},
		{"query:", agent.Injection{}, true},
		{"basic:", agent.Injection{}, true},
		{"cookie:x", agent.Injection{}, true},
		{"Bearer", agent.Injection{}, true},
	}
	for _, tc := range cases {
		got, err := agent.ParseInjection(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%q: err %v, want error %v", tc.in, err, tc.err)
			continue
		}
		var se *agent.SecretError
		if err != nil && (!errors.As(err, &se) || se.Field != "injection") {
			t.Errorf("%q: error %v is not a agent.SecretError on the injection", tc.in, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tc.in, diff)
		}
		if err == nil {
			back, err := agent.ParseInjection(got.String())
			if err != nil || back != got {
				t.Errorf("%q: String() = %q reads back as %+v, %v", tc.in, got.String(), back, err)
			}
		}
	}
}

func TestDescribeInjection(t *testing.T) {
	for in, want := range map[agent.Injection]string{
		{Kind: agent.InjectBearer}: "bearer",
		{}:                         "bearer",
		{Kind: agent.InjectHeader, Name: "X-Api-Key"}:                 "header X-Api-Key",
		{Kind: agent.InjectHeader, Name: "X-Api-Key", Prefix: "Key "}: `header X-Api-Key (prefix "Key ")`,
		{Kind: agent.InjectQuery, Name: "key"}:                        "query key",
		{Kind: agent.InjectBasic, Username: "alice"}:                  "basic alice",
	} {
		if got := in.Describe(); got != want {
			t.Errorf("%+v.Describe() = %q, want %q", in, got, want)
		}
	}
}

func TestParseSecretAdd(t *testing.T) {
	cases := []struct {
		args  []string
		want  agent.NewSecret
		field string // of the agent.SecretError; "" means success
	}{
		{[]string{"gh", "--host", "api.github.com"}, agent.NewSecret{Name: "gh", Hosts: []string{"api.github.com"}, Injection: "bearer"}, ""},
		{[]string{"--host", "a.example", "gh", "--host", "b.example:8443", "--bearer"}, agent.NewSecret{Name: "gh", Hosts: []string{"a.example", "b.example:8443"}, Injection: "bearer"}, ""},
		{[]string{"jira", "--host", "x.atlassian.net", "--header", "X-Key", "--prefix", "Key "}, agent.NewSecret{Name: "jira", Hosts: []string{"x.atlassian.net"}, Injection: "header:X-Key:Key "}, ""},
		{[]string{"maps", "--query", "key", "--host", "maps.example"}, agent.NewSecret{Name: "maps", Hosts: []string{"maps.example"}, Injection: "query:key"}, ""},
		{[]string{"ci", "--host", "ci.example", "--basic", "bot"}, agent.NewSecret{Name: "ci", Hosts: []string{"ci.example"}, Injection: "basic:bot"}, ""},
		{[]string{"gh"}, agent.NewSecret{}, "hosts"},
		{[]string{"--host", "h.example"}, agent.NewSecret{}, "name"},
		{[]string{"a", "b", "--host", "h.example"}, agent.NewSecret{}, "name"},
		{[]string{"gh", "--host"}, agent.NewSecret{}, "injection"},
		{[]string{"gh", "--host", "h.example", "--bearer", "--query", "k"}, agent.NewSecret{}, "injection"},
		{[]string{"gh", "--host", "h.example", "--prefix", "Key "}, agent.NewSecret{}, "injection"},
		{[]string{"gh", "--host", "h.example", "--cookie", "x"}, agent.NewSecret{}, "injection"},
	}
	for _, tc := range cases {
		got, err := agent.ParseSecretAdd(tc.args)
		if tc.field == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.args, err)
			} else if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("%q (-want +got):\n%s", tc.args, diff)
			}
			continue
		}
		var se *agent.SecretError
		if !errors.As(err, &se) || se.Field != tc.field {
			t.Errorf("%q: %v, want a agent.SecretError on %s", tc.args, err, tc.field)
		}
	}
	// The same flags in a command line's FlagSet, beside its own.
	fs := flag.NewFlagSet("vault set", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	user := fs.String("user", "", "")
	var f agent.SecretFlags
	f.Register(fs)
	if err := fs.Parse([]string{"--user", "terminal::local", "--host", "h.example", "--header", "X-Key"}); err != nil {
		t.Fatal(err)
	}
	in, err := f.Injection()
	if err != nil || *user != "terminal::local" || in != (agent.Injection{Kind: agent.InjectHeader, Name: "X-Key"}) || len(f.Hosts) != 1 {
		t.Errorf("agent.SecretFlags in another FlagSet: %+v %v %q %v", in, err, *user, f.Hosts)
	}
}
