package store

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/talonhq/talon/agent/llm"
)

func TestDecodeMessage(t *testing.T) {
	tests := []struct {
		name string
		msg  llm.Message
	}{
		{"plain", llm.Message{Role: llm.RoleUser, Content: "hello"}},
		{"empty content", llm.Message{Role: llm.RoleAssistant}},
		{"escapes", llm.Message{Role: llm.RoleAssistant, Content: "line 1\nline \"2\"\t\\ /\r\b\f"}},
		{"html escaped by Marshal", llm.Message{Role: llm.RoleUser, Content: "<a href=\"x\">&amp;</a>"}},
		{"non-ASCII and surrogate pairs", llm.Message{Role: llm.RoleUser, Content: "héllo wörld 😀 \u2028 \u2029 \x7f"}},
		{"invalid UTF-8 becomes U+FFFD", llm.Message{Role: llm.RoleUser, Content: "a\xffb"}},
		{"control characters", llm.Message{Role: llm.RoleUser, Content: "\x00\x01\x1f"}},
		{"tool calls", llm.Message{Role: llm.RoleAssistant, Content: "x", ToolCalls: []llm.ToolCall{{ID: "c1", Name: "f", Arguments: `{"a":1}`}}}},
		{"tool result", llm.Message{Role: llm.RoleTool, Content: "out", ToolCallID: "c1", ToolName: "f", IsError: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(&tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			var want, got llm.Message
			if err := json.Unmarshal(b, &want); err != nil {
				t.Fatal(err)
			}
			if err := decodeMessage(b, &got); err != nil {
				t.Fatalf("decodeMessage(%s): %v", b, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("decodeMessage(%s) (-json.Unmarshal +got):\n%s", b, diff)
			}
		})
	}
}

// FuzzDecodeMessage checks that decodeMessage agrees with json.Unmarshal,
// on what json.Marshal writes and on arbitrary bytes.
func FuzzDecodeMessage(f *testing.F) {
	f.Add("user", "hello", []byte(`{"role":"user","content":"a\u00e9\ud83d\ude00\n"}`))
	f.Add("assistant", "a\"b\\c\n<>&\u2028", []byte(`{"role":"user","content":"\ud800"}`))
	f.Add("tool", "\xff\x00", []byte(`{"role":"u\"","content":"x"}`))
	f.Fuzz(func(t *testing.T, role, content string, raw []byte) {
		b, err := json.Marshal(&llm.Message{Role: llm.Role(role), Content: content})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range [][]byte{b, raw} {
			var want, got llm.Message
			wantErr := json.Unmarshal(in, &want)
			gotErr := decodeMessage(in, &got)
			if (wantErr == nil) != (gotErr == nil) {
				t.Fatalf("%q: json.Unmarshal error %v, decodeMessage error %v", in, wantErr, gotErr)
			}
			if wantErr == nil {
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("%q (-json.Unmarshal +got):\n%s", in, diff)
				}
			}
		}
	})
}
