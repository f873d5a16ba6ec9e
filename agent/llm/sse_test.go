package llm

import (
	"bytes"
	"errors"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// readEvents reads every event of body with the given bound, as "type|data"
// strings, and the error that ended the reading (nil for a clean end).
func readEvents(r io.Reader, max int) ([]string, error) {
	s := newSSEReader(r, max)
	var got []string
	for {
		ev, err := s.next()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, ev.typ+"|"+string(ev.data))
	}
}

func TestSSEReader(t *testing.T) {
	cases := []struct {
		name string
		body string
		want []string
	}{
		{"lf", "data: a\n\ndata: b\n\n", []string{"|a", "|b"}},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", []string{"|a", "|b"}},
		{"lone cr", "data: a\r\rdata: b\r\r", []string{"|a", "|b"}},
		{"mixed ends", "data: a\r\n\ndata: b\r\r\ndata: c\n\r", []string{"|a", "|b", "|c"}},
		{"comments", ": keep-alive\n\n:\ndata: a\n: between\n\n: tail\n\n", []string{"|a"}},
		{"multi-line data", "data: {\"a\":\ndata: 1}\n\n", []string{"|{\"a\":\n1}"}},
		{"event field", "event: error\ndata: x\n\ndata: y\n\n", []string{"error|x", "|y"}},
		{"event without data is dropped, its type too", "event: ping\n\ndata: y\n\n", []string{"|y"}},
		{"empty data dispatches", "data:\n\ndata\n\n", []string{"|", "|"}},
		{"one space stripped", "data:x\n\ndata:  x\n\n", []string{"|x", "| x"}},
		{"id, retry and unknown fields ignored", "id: 7\nretry: 10\nfoo: bar\ndata: a\n\n", []string{"|a"}},
		{"byte-order mark", "\xef\xbb\xbfdata: a\n\n", []string{"|a"}},
		{"no final blank line", "data: a\n\ndata: b\n", []string{"|a", "|b"}},
		{"no final line end", "data: a\n\ndata: b", []string{"|a", "|b"}},
		{"blank lines only", "\n\n\r\n\r", nil},
		{"empty", "", nil},
		{"not an event stream", "{\"hello\":\"world\"}", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for name, r := range map[string]io.Reader{
				"whole":    strings.NewReader(tc.body),
				"one byte": iotest.OneByteReader(strings.NewReader(tc.body)),
			} {
				got, err := readEvents(r, 1<<10)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("%s: events (-want +got):\n%s", name, diff)
				}
			}
		})
	}
}

func TestSSEReaderBounds(t *testing.T) {
	const max = 64
	cases := []struct {
		name string
		body string
		ok   bool
	}{
		{"line at the bound", "data:" + strings.Repeat("x", max-5) + "\n\n", true},
		{"line over the bound", "data:" + strings.Repeat("x", max-4) + "\n\n", false},
		{"line over the bound, never ended", strings.Repeat("x", 10*max), false},
		{"comment over the bound", ":" + strings.Repeat("x", max) + "\n", false},
		{"event over the bound in short lines", strings.Repeat("data: 0123456789\n", 10) + "\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readEvents(strings.NewReader(tc.body), max)
			if tc.ok && err != nil {
				t.Errorf("error %v, want none", err)
			}
			if !tc.ok && !errors.Is(err, errEventTooLarge) {
				t.Errorf("error %v, want errEventTooLarge", err)
			}
		})
	}
}

func TestSSEReaderKeepsReadErrors(t *testing.T) {
	broken := io.MultiReader(strings.NewReader("data: a\n\ndata: b"), iotest.ErrReader(io.ErrUnexpectedEOF))
	got, err := readEvents(broken, 1<<10)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("error %v, want io.ErrUnexpectedEOF (a broken body is not a clean end)", err)
	}
	if diff := cmp.Diff([]string{"|a"}, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// streamResponse wraps body as the 200 answer of a streaming request.
func streamResponse(body io.Reader) *http.Response {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}}, Body: io.NopCloser(body)}
}

// FuzzOpenAIStream feeds arbitrary bodies to the stream decoder: it never
// panics, reads the same events however the body is split, passes only
// valid UTF-8 on, stays within its bounds and fails only with our own short
// errors.
func FuzzOpenAIStream(f *testing.F) {
	chunk := func(s string) string { return "data: " + s + "\n\n" }
	seeds := []string{
		chunk(`{"choices":[{"index":0,"delta":{"role":"assistant","content":"hi"}}]}`) +
			chunk(`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`) +
			chunk(`{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}`) + chunk(`[DONE]`),
		chunk(`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{\"x\""}}]}}]}`) +
			chunk(`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}`) +
			chunk(`{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":{"y":2}}}]},"finish_reason":"stop"}]}`),
		"event: error\ndata: {\"error\":{\"type\":\"server_error\"}}\n\n",
		"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n: keep-alive\r\rdata: {\"choices\":[{\"finish_reason\":\"length\"}]}",
		chunk(`{"choices":[{"index":"0","delta":{"content":[{"type":"text","text":"x"}]},"finish_reason":null}],"usage":{"prompt_tokens":1e3}}`),
		chunk(`{"choices":[{"delta":{"tool_calls":[{"index":99999999999}]}}]}`),
		chunk("{\"choices\":[{\"delta\":{\"content\":\"\xff\"}}]}"),
		chunk(`{"choices":[{"delta":{"content":"\ud800"}}]}`),
		chunk(`not json`) + chunk(`{}`),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		whole, errWhole := readEvents(bytes.NewReader(body), MaxResponseBytes)
		split, errSplit := readEvents(iotest.OneByteReader(bytes.NewReader(body)), MaxResponseBytes)
		if !cmp.Equal(whole, split) || (errWhole == nil) != (errSplit == nil) {
			t.Fatalf("events depend on how the body is split: %q (%v) vs %q (%v)", whole, errWhole, split, errSplit)
		}

		var deltas strings.Builder
		resp, fail := decodeOpenAIStream(streamResponse(bytes.NewReader(body)), func(d string) {
			if d == "" || !utf8.ValidString(d) {
				t.Fatalf("delta %q is empty or not valid UTF-8", d)
			}
			deltas.WriteString(d)
		})
		if fail != nil {
			if fail.kind != ErrBadResponse && fail.kind != ErrServer {
				t.Fatalf("kind %v, want bad_response or server", fail.kind)
			}
			if fail.err == nil || len(fail.err.Error()) > 120 {
				t.Fatalf("error %v: want a short error of ours", fail.err)
			}
			if fail.retryable && deltas.Len() > 0 {
				t.Fatalf("a failure after text was shown is retryable")
			}
			return
		}
		m := resp.Message
		if m.Content != deltas.String() {
			t.Fatalf("content %q is not the deltas %q", m.Content, deltas.String())
		}
		if len(m.ToolCalls) > MaxToolCalls || len(m.Content) > MaxResponseBytes {
			t.Fatalf("answer past the bounds: %d calls, %d bytes", len(m.ToolCalls), len(m.Content))
		}
		for _, c := range m.ToolCalls {
			if !utf8.ValidString(c.ID + c.Name + c.Arguments) {
				t.Fatalf("tool call %+v is not valid UTF-8", c)
			}
		}
		if resp.StopReason == "" || resp.Usage.InputTokens < 0 || resp.Usage.OutputTokens < 0 {
			t.Fatalf("stop %q, usage %+v", resp.StopReason, resp.Usage)
		}
	})
}

// TestOpenAIClientUsesOnlyTheStandardLibrary keeps the OpenAI-compatible
// client free of dependencies: the official SDK it replaced weighed 18.8 MB
// of the 49 MB binary for one endpoint.
func TestOpenAIClientUsesOnlyTheStandardLibrary(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "anthropic.go" {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %s; only anthropic.go may use a module outside the standard library", name, path)
			}
		}
		checked++
	}
	if checked < 5 {
		t.Fatalf("checked only %d files; is the glob broken?", checked)
	}
}

// BenchmarkOpenAIStreamFineArguments decodes a stream whose tool-call
// arguments come one byte per chunk, as a hostile server may send them:
// the cost must grow linearly with the fragments, not with their square.
func BenchmarkOpenAIStreamFineArguments(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var body bytes.Buffer
			body.WriteString(`data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f"}}]}}]}` + "\n\n")
			for range n {
				body.WriteString(`data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"x"}}]}}]}` + "\n\n")
			}
			body.WriteString(`data: {"choices":[{"delta":{},"finish_reason":"tool_calls"}]}` + "\n\n")
			b.SetBytes(int64(body.Len()))
			for b.Loop() {
				resp, f := decodeOpenAIStream(streamResponse(bytes.NewReader(body.Bytes())), func(string) {})
				if f != nil || len(resp.Message.ToolCalls[0].Arguments) != n {
					b.Fatalf("decode: %v", f)
				}
			}
		})
	}
}
