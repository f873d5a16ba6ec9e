package chat

import (
	"testing"

	"github.com/talonhq/talon/agent"
)

func TestUnfurl(t *testing.T) {
	trusted, err := agent.ParseTrustedHosts([]string{"docs.example.com", "*.wiki.example"})
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]bool{
		"no link at all": false,
		"see https://docs.example.com/a?b=1&amp;c=2.":                   true,
		"<https://docs.example.com/x|the docs>":                         true,
		"[docs](https://a.wiki.example/p) and https://docs.example.com": true,
		"https://evil.example/?d=secret":                                false,
		"<https://evil.example/?d=secret|the docs>":                     false,
		"[the docs](https://evil.example/?d=secret)":                    false,
		"![chart](https://evil.example/i.png?d=secret)":                 false,
		"https://docs.example.com and evil.example/?d=secret":           false, // a bare name Slack links
		"https://docs.example.com.evil.example/":                        false,
		"https://docs.example.com@evil.example/":                        false,
		"HTTPS://DOCS.EXAMPLE.COM/":                                     true,
		"ftp://docs.example.com/":                                       false,
		"https://xn--dcs-xka.example.com/":                              false,
		"https://docs.example.com/ mail me at a@b.example":              true, // an address is not a link to b.example
	}
	for text, want := range tests {
		if got := Unfurl(text, trusted); got != want {
			t.Errorf("Unfurl(%q) = %v, want %v", text, got, want)
		}
	}
	if Unfurl("https://docs.example.com/", agent.TrustedHosts{}) {
		t.Error("with no trusted host a link unfurls")
	}
}

func FuzzUnfurl(f *testing.F) {
	trusted, _ := agent.ParseTrustedHosts([]string{"docs.example.com"})
	f.Add("see https://docs.example.com/a and <https://evil.example|x>")
	f.Fuzz(func(t *testing.T, s string) {
		if Unfurl(s, trusted) && Unfurl(s+" https://evil.example/", trusted) {
			t.Errorf("an untrusted link added to %q still unfurls", s)
		}
	})
}
