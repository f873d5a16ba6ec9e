package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/talonhq/talon/sandbox/guest"
)

func TestBuild(t *testing.T) {
	tests := []struct {
		name    string
		args    args
		want    guest.Request
		wantErr string
	}{
		{
			name: "get defaults",
			args: args{URL: "https://api.example.com/v1/x"},
			want: guest.Request{Method: "GET", URL: "https://api.example.com/v1/x", Headers: map[string]string{"Accept": "application/json"}},
		},
		{
			name: "post json with credential",
			args: args{Method: "post", URL: "https://api.example.com/v1/x", JSON: json.RawMessage(`{ "a" : [1, 2] }`), Credential: "example", Headers: map[string]string{"accept": "text/plain"}},
			want: guest.Request{Method: "POST", URL: "https://api.example.com/v1/x", Body: `{"a":[1,2]}`, Credential: "example",
				Headers: map[string]string{"accept": "text/plain", "Content-Type": "application/json"}},
		},
		{
			name: "null json is no body",
			args: args{Method: "DELETE", URL: "https://api.example.com/v1/x/1", JSON: json.RawMessage(`null`)},
			want: guest.Request{Method: "DELETE", URL: "https://api.example.com/v1/x/1", Headers: map[string]string{"Accept": "application/json"}},
		},
		{name: "bad method", args: args{Method: "CONNECT", URL: "https://x.example/"}, wantErr: "not supported"},
		{name: "relative url", args: args{URL: "/v1/x"}, wantErr: "absolute http or https"},
		{name: "file url", args: args{URL: "file:///etc/passwd"}, wantErr: "absolute http or https"},
		{name: "get with body", args: args{URL: "https://x.example/", JSON: json.RawMessage(`{}`)}, wantErr: "cannot have a json body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := build(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("build error = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("request mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestShape(t *testing.T) {
	long := strings.Repeat("é", maxTextChars+5)
	tests := []struct {
		name string
		resp guest.Response
		want string // result as JSON
	}{
		{
			name: "json parsed",
			resp: guest.Response{Status: 201, Headers: map[string]string{"Content-Type": "application/json; charset=utf-8", "Set-Cookie": "x"}, Body: `{"id": 7}`},
			want: `{"status":201,"headers":{"content-type":"application/json; charset=utf-8"},"body":{"id":7}}`,
		},
		{
			name: "problem json parsed",
			resp: guest.Response{Status: 400, Headers: map[string]string{"content-type": "application/problem+json"}, Body: `{"title":"bad"}`},
			want: `{"status":400,"headers":{"content-type":"application/problem+json"},"body":{"title":"bad"}}`,
		},
		{
			name: "invalid json as text",
			resp: guest.Response{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: `{"id":`},
			want: `{"status":200,"headers":{"content-type":"application/json"},"body":"{\"id\":"}`,
		},
		{
			name: "truncated json as text",
			resp: guest.Response{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: `[1,2]`, Truncated: true},
			want: `{"status":200,"headers":{"content-type":"application/json"},"body":"[1,2]","truncated":true}`,
		},
		{
			name: "text truncated",
			resp: guest.Response{Status: 200, Body: long},
			want: `{"status":200,"body":"` + long[:2*maxTextChars] + `","truncated":true}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(shape(tt.resp))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(b)); diff != "" {
				t.Errorf("result mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
