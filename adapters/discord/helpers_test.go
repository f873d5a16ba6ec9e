package discord

import (
	"encoding/json"

	"github.com/talonhq/talon/agent"
)

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func jsonRoundTrip(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func agentReply() agent.Reply {
	return agent.Reply{ID: 1, ReplyTo: "m:1:2", Text: "x"}
}
