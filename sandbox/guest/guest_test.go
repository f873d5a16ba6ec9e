package guest

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

type greetArgs struct {
	Name  string `json:"name"`
	Times int    `json:"times"`
}

func greet(a greetArgs) (map[string]any, error) {
	switch a.Name {
	case "fail":
		return nil, errors.New("no greeting for fail")
	case "panic":
		panic("boom")
	case "nilmap":
		var m map[string]int
		m["x"] = 1
	}
	return map[string]any{"greeting": strings.Repeat("hi "+a.Name+" ", a.Times)}, nil
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string
	}{
		{"ok", `{"tool":"greet","args":{"name":"ann","times":1}}`, `{"ok":{"greeting":"hi ann "}}`},
		{"missing args is zero value", `{"tool":"greet"}`, `{"ok":{"greeting":""}}`},
		{"null args is zero value", `{"tool":"greet","args":null}`, `{"ok":{"greeting":""}}`},
		{"handler error", `{"tool":"greet","args":{"name":"fail"}}`, `{"error":"no greeting for fail"}`},
		{"panic recovered", `{"tool":"greet","args":{"name":"panic"}}`, `{"error":"tool panicked: boom"}`},
		{"runtime panic recovered", `{"tool":"greet","args":{"name":"nilmap"}}`, `{"error":"tool panicked: assignment to entry in nil map"}`},
		{"wrong type", `{"tool":"greet","args":{"name":3}}`, `{"error":"invalid arguments: json: cannot unmarshal number into Go struct field greetArgs.name of type string"}`},
		{"unknown field", `{"tool":"greet","args":{"nme":"x"}}`, `{"error":"invalid arguments: json: unknown field \"nme\""}`},
		{"args not an object", `{"tool":"greet","args":[1]}`, `{"error":"invalid arguments: json: cannot unmarshal array into Go value of type guest.greetArgs"}`},
		{"malformed envelope", `{"tool":`, `{"error":"invalid input: unexpected end of JSON input"}`},
		{"html passes unescaped", `{"tool":"greet","args":{"name":"<b>&</b>","times":1}}`, `{"ok":{"greeting":"hi <b>&</b> "}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(dispatch([]byte(tt.input), greet))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("dispatch(%s) mismatch (-want +got):\n%s", tt.input, diff)
			}
		})
	}
}

func TestRunRegistersHandler(t *testing.T) {
	t.Cleanup(func() { handler = nil })
	Run(func(a struct{ X int }) (int, error) { return a.X * 2, nil })
	got := string(handler([]byte(`{"tool":"t","args":{"X":21}}`)))
	if want := `{"ok":42}`; got != want {
		t.Errorf("handler output = %s, want %s", got, want)
	}
}

func TestOutputsAreValidJSON(t *testing.T) {
	for _, b := range [][]byte{
		okOutput(nil),
		okOutput("x"),
		okOutput(func() {}), // cannot be encoded
		errorOutput(""),
		errorOutput("bad \"quote\" \xff"),
		noHandlerOutput(),
	} {
		var o map[string]json.RawMessage
		if err := json.Unmarshal(b, &o); err != nil {
			t.Errorf("output %s is not valid JSON: %v", b, err)
			continue
		}
		if len(o) != 1 {
			t.Errorf("output %s has %d fields, want exactly one", b, len(o))
		}
	}
	if got, want := string(okOutput(nil)), `{"ok":null}`; got != want {
		t.Errorf("okOutput(nil) = %s, want %s", got, want)
	}
}

func TestDecodeHTTPResult(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Response
		wantErr error
	}{
		{
			name: "ok",
			in:   `{"status":200,"headers":{"Content-Type":"text/html"},"body":"<p>x</p>","truncated":true,"url":"https://final.example/"}`,
			want: Response{Status: 200, Headers: map[string]string{"Content-Type": "text/html"}, Body: "<p>x</p>", Truncated: true, URL: "https://final.example/"},
		},
		{
			name:    "error",
			in:      `{"error":{"kind":"denied","message":"host \"10.0.0.1\" refused: address is private"}}`,
			wantErr: &HTTPError{Kind: KindDenied, Message: `host "10.0.0.1" refused: address is private`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeHTTPResult([]byte(tt.in))
			if tt.wantErr != nil {
				var he *HTTPError
				if !errors.As(err, &he) {
					t.Fatalf("error = %v, want *HTTPError", err)
				}
				if diff := cmp.Diff(tt.wantErr, he); diff != "" {
					t.Errorf("error mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeHTTPResult: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("response mismatch (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := decodeHTTPResult([]byte(`not json`)); err == nil {
		t.Error("decodeHTTPResult(not json) succeeded, want error")
	}
}

func TestOutsideSandbox(t *testing.T) {
	if _, err := HTTP(Request{URL: "https://example.com/"}); !errors.Is(err, ErrNotInSandbox) {
		t.Errorf("HTTP error = %v, want ErrNotInSandbox", err)
	}
	if HasSecret("github") {
		t.Error("HasSecret outside the sandbox = true, want false")
	}
	Info("discarded") // must not panic
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		want    string
		wantCut bool
	}{
		{"short", "hello", 10, "hello", false},
		{"exact", "hello", 5, "hello", false},
		{"ascii cut", "hello", 3, "hel", true},
		{"multibyte not split", "héllo wörld", 2, "hé", true},
		{"emoji", "a😀b", 2, "a😀", true},
		{"bytes fit but runes counted", "ééé", 3, "ééé", false},
		{"invalid utf8 replaced", "ab\xffcd", 3, "ab\uFFFD", true},
		{"invalid utf8 kept whole", "a\xe2\x82", 5, "a\uFFFD", false},
		{"zero", "abc", 0, "", true},
		{"negative", "abc", -1, "", true},
		{"empty", "", 0, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, cut := Truncate(tt.in, tt.max)
			if got != tt.want || cut != tt.wantCut {
				t.Errorf("Truncate(%q, %d) = %q, %v; want %q, %v", tt.in, tt.max, got, cut, tt.want, tt.wantCut)
			}
			if !utf8.ValidString(got) {
				t.Errorf("Truncate(%q, %d) = %q is not valid UTF-8", tt.in, tt.max, got)
			}
		})
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("héllo\xff", 3)
	f.Fuzz(func(t *testing.T, s string, n int) {
		n %= 1000
		got, _ := Truncate(s, n)
		if !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q is not valid UTF-8", s, n, got)
		}
		if n >= 0 && utf8.RuneCountInString(got) > n {
			t.Fatalf("Truncate(%q, %d) = %q has more than %d runes", s, n, got, n)
		}
	})
}

// A handler that calls Attach returns its file beside the result, in
// base64; one that fails after Attach returns no file, and the next call
// starts without one.
func TestAttach(t *testing.T) {
	report := func(a greetArgs) (string, error) {
		Attach("report.csv", "text/csv", []byte("a,b\n1,2\n"))
		if a.Name == "fail" {
			return "", errors.New("no report")
		}
		return "see the file", nil
	}
	got := string(dispatch([]byte(`{"tool":"report","args":{}}`), report))
	want := `{"ok":"see the file","file":{"name":"report.csv","type":"text/csv","data":"YSxiCjEsMgo="}}`
	if got != want {
		t.Errorf("output %s, want %s", got, want)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal([]byte(got), &out); err != nil || len(out) != 2 {
		t.Errorf("output is not one JSON object of two fields: %v", err)
	}
	if got := string(dispatch([]byte(`{"tool":"report","args":{"name":"fail"}}`), report)); got != `{"error":"no report"}` {
		t.Errorf("failed call output %s", got)
	}
	if got := string(dispatch([]byte(`{"tool":"greet","args":{"name":"x","times":1}}`), greet)); strings.Contains(got, "file") {
		t.Errorf("a call without Attach returned %s", got)
	}
}
