package main

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/sandbox/guest"
)

func TestShape(t *testing.T) {
	tests := []struct {
		name     string
		resp     guest.Response
		maxChars int
		want     result
	}{
		{
			name:     "html",
			resp:     guest.Response{Status: 200, URL: "https://x.example/", Headers: map[string]string{"content-type": "text/html; charset=utf-8"}, Body: "<title>T</title><p>héllo world</p>"},
			maxChars: 100,
			want:     result{Status: 200, URL: "https://x.example/", Title: "T", Text: "héllo world"},
		},
		{
			name:     "html truncated on rune boundary",
			resp:     guest.Response{Status: 200, Headers: map[string]string{"Content-Type": "text/html"}, Body: "<p>héllo world</p>"},
			maxChars: 2,
			want:     result{Status: 200, Text: "hé", Truncated: true},
		},
		{
			name:     "json passed through",
			resp:     guest.Response{Status: 404, Headers: map[string]string{"Content-Type": "application/json"}, Body: `{"a":"<p>"}`},
			maxChars: 100,
			want:     result{Status: 404, Text: `{"a":"<p>"}`},
		},
		{
			name:     "sniffed html without content type",
			resp:     guest.Response{Status: 200, Body: "  <!doctype html><title>S</title><p>x"},
			maxChars: 100,
			want:     result{Status: 200, Title: "S", Text: "x"},
		},
		{
			name:     "host truncation reported",
			resp:     guest.Response{Status: 200, Headers: map[string]string{"Content-Type": "text/plain"}, Body: "abc\xff", Truncated: true},
			maxChars: 100,
			want:     result{Status: 200, Text: "abc\uFFFD", Truncated: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := shape(tt.resp, tt.maxChars)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("shape mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFetchRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "ftp://x.example/", "file:///etc/passwd", "https://", "::bad"} {
		if _, err := fetch(args{URL: u}); err == nil || strings.Contains(err.Error(), "sandbox") {
			t.Errorf("fetch(%q) error = %v, want a url error", u, err)
		}
	}
}
