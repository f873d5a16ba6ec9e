package egress

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseHost(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		ip      bool
		wantErr bool
	}{
		{in: "API.Example.COM.", want: "api.example.com"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "127.0.0.1", want: "127.0.0.1", ip: true},
		{in: "2130706433", want: "127.0.0.1", ip: true},
		{in: "0177.0.0.1", want: "127.0.0.1", ip: true},
		{in: "0x7f.1", want: "127.0.0.1", ip: true},
		{in: "0X7F.0.0.1", want: "127.0.0.1", ip: true},
		{in: "127.1", want: "127.0.0.1", ip: true},
		{in: "10.1", want: "10.0.0.1", ip: true},
		{in: "10.0.258", want: "10.0.1.2", ip: true},
		{in: "0x", want: "0.0.0.0", ip: true},
		{in: "0", want: "0.0.0.0", ip: true},
		{in: "1.2.3.4.", want: "1.2.3.4", ip: true},
		{in: "::ffff:127.0.0.1", want: "::ffff:127.0.0.1", ip: true},
		{in: "[::FFFF:7F00:1]", want: "::ffff:127.0.0.1", ip: true},
		{in: "1.2.3.256", wantErr: true},
		{in: "256.1.1.1", wantErr: true},
		{in: "1.16777216", wantErr: true},
		{in: "4294967296", wantErr: true},
		{in: "0x100000000", wantErr: true},
		{in: "08.1.1.1", wantErr: true},
		{in: "1.2.3.4.5", wantErr: true},
		{in: "a.1", wantErr: true},
		{in: "1..1", wantErr: true},
		{in: "fe80::1%eth0", wantErr: true},
		{in: "", wantErr: true},
		{in: ".", wantErr: true},
		{in: "a..b", wantErr: true},
		{in: "ex\u00e4mple.com", wantErr: true},
		{in: "a b", wantErr: true},
		{in: "a/b", wantErr: true},
		{in: "1.2.3.4x", want: "1.2.3.4x"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			h, err := parseHost(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseHost(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if h.Name != tt.want || h.IsIP() != tt.ip {
				t.Errorf("parseHost(%q) = %q ip=%v, want %q ip=%v", tt.in, h.Name, h.IsIP(), tt.want, tt.ip)
			}
		})
	}
}

func TestCheckAddr(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd12::/16")}
	tests := []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true},
		{"93.184.215.14", true},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::808:808", true},
		{"2002:808:808::1", true},
		{"2606:4700:4700::1111", true},
		{"10.1.2.3", true}, // operator allowlist
		{"::ffff:10.1.2.3", true},
		{"fd12::1", true},
		{"10.2.0.1", false},
		{"127.0.0.1", false},
		{"169.254.169.254", false},
		{"100.127.255.255", false},
		{"198.19.255.255", false},
		{"203.0.113.9", false},
		{"255.255.255.255", false},
		{"::1", false},
		{"::", false},
		{"::ffff:10.2.0.1", false},
		{"64:ff9b::a02:1", false},
		{"64:ff9b:1::1", false},
		{"2002:c0a8:101::", false},
		{"2001:0:c0a8:101::", false},
		{"2001:0:808:808::3f57:fefe", false}, // Teredo client 192.168.1.1
		{"fe80::1", false},
		{"fec0::1", false},
		{"fc00::1", false},
		{"fd00:ec2::254", false},
		{"ff02::1", false},
		{"100::1", false},
		{"2001:db8::1", false},
		{"3fff::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			r := checkAddr(netip.MustParseAddr(tt.addr), allow)
			if (r == "") != tt.public {
				t.Errorf("checkAddr(%s) = %q, want public %v", tt.addr, r, tt.public)
			}
		})
	}
}

func TestRuleValidate(t *testing.T) {
	tests := []struct {
		rule Rule
		ok   bool
	}{
		{Rule{Host: "api.github.com"}, true},
		{Rule{Host: "*.example.com", Methods: []string{"GET", "POST"}, PathPrefixes: []string{"/v1/", "/v2"}}, true},
		{Rule{Host: "*"}, true},
		{Rule{Host: "api.example.com:8443", Scheme: "http"}, true},
		{Rule{Host: "[2606:4700::1]:443"}, true},
		{Rule{Host: "*.com"}, false},
		{Rule{Host: "a.*.com"}, false},
		{Rule{Host: ""}, false},
		{Rule{Host: "api.example.com:0"}, false},
		{Rule{Host: "api.example.com", Scheme: "ftp"}, false},
		{Rule{Host: "api.example.com", Methods: []string{"CONNECT"}}, false},
		{Rule{Host: "api.example.com", PathPrefixes: []string{"/v1/../x"}}, false},
		{Rule{Host: "api.example.com", PathPrefixes: []string{"v1"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.rule.Host, func(t *testing.T) {
			if err := tt.rule.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate(%+v) = %v, want ok %v", tt.rule, err, tt.ok)
			}
		})
	}
}

func TestAllowPathPrefix(t *testing.T) {
	r := Rule{PathPrefixes: []string{"/v1/", "/repos"}}
	var got []string
	for _, p := range []string{"/v1/", "/v1/x", "/v1", "/v10", "/repos", "/repos/a", "/reposx", "/"} {
		if r.allowsPath(p) {
			got = append(got, p)
		}
	}
	want := []string{"/v1/", "/v1/x", "/v1", "/repos", "/repos/a"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("allowed paths (-want +got):\n%s", diff)
	}
}
