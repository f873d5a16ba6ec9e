package vault

import (
	"errors"
	"testing"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means an error is expected
	}{
		{"api.github.com", "api.github.com"},
		{"API.GitHub.COM", "api.github.com"},
		{"api.github.com.", "api.github.com"},
		{"api.github.com:443", "api.github.com"},
		{"api.github.com.:443", "api.github.com"},
		{"api.github.com:8443", "api.github.com:8443"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"my_host.example.com", "my_host.example.com"},
		{"localhost", "localhost"},
		{"1.2.3.4", "1.2.3.4"},
		{"1.2.3.4:443", "1.2.3.4"},
		{"1.2.3.4:80", "1.2.3.4:80"},
		{"[2001:DB8::1]", "[2001:db8::1]"},
		{"2001:db8:0:0::1", "[2001:db8::1]"},
		{"[2001:db8::1]:443", "[2001:db8::1]"},
		{"[2001:db8::1]:8080", "[2001:db8::1]:8080"},
		{"", ""},
		{".", ""},
		{"a..b", ""},
		{".example.com", ""},
		{"example.com..", ""},
		{"-a.example.com", ""},
		{"a-.example.com", ""},
		{"exa mple.com", ""},
		{"user@example.com", ""},
		{"example.com/path", ""},
		{"https://example.com", ""},
		{"example.com:", ""},
		{"example.com:0", ""},
		{"example.com:65536", ""},
		{"example.com:0443", ""},
		{"example.com:http", ""},
		{"bücher.example", ""},
		{"1.2.3", ""},
		{"0x7f.1", ""},
		{"2130706433", ""},
		{"01.2.3.4", ""},
		{"[fe80::1%eth0]", ""},
		{"fe80::1%eth0", ""},
		{"[1.2.3.4]", ""},
		{"[::1", ""},
		{"[::1]x", ""},
		{"*.example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeHost(tt.in)
			if tt.want == "" {
				if err == nil || !errors.Is(err, ErrInvalidHost) {
					t.Fatalf("NormalizeHost(%q) = %q, %v; want ErrInvalidHost", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestAllowsHost(t *testing.T) {
	e := Entry{Hosts: []string{"api.github.com", "*.googleapis.com", "10.0.0.1", "*.internal.example:8443", "bad host"}}
	tests := []struct {
		host string
		want bool
	}{
		{"api.github.com", true},
		{"API.GITHUB.COM.", true},
		{"api.github.com:443", true},
		{"api.github.com:8443", false},
		{"github.com", false},
		{"evil-api.github.com", false},
		{"api.github.com.evil.com", false},
		{"x.api.github.com", false},
		{"storage.googleapis.com", true},
		{"a.b.googleapis.com", true},
		{"googleapis.com", false},
		{"evilgoogleapis.com", false},
		{"10.0.0.1", true},
		{"10.0.0.1:443", true},
		{"010.0.0.1", false},
		{"x.10.0.0.1", false},
		{"svc.internal.example:8443", true},
		{"svc.internal.example", false},
		{"bad host", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			if got := e.AllowsHost(tt.host); got != tt.want {
				t.Errorf("AllowsHost(%q) = %v, want %v", tt.host, got, tt.want)
			}
		})
	}
}

func TestNormalizeHostPattern(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"*.Example.COM.", "*.example.com"},
		{"*.example.com:443", "*.example.com"},
		{"*.com", ""},
		{"*", ""},
		{"*.1.2.3.4", ""},
		{"*.[::1]", ""},
		{"a.*.example.com", ""},
		{"**.example.com", ""},
		{"*example.com", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeHostPattern(tt.in)
		if (tt.want == "") != (err != nil) || got != tt.want {
			t.Errorf("NormalizeHostPattern(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
