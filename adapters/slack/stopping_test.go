package slack

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// While Talon stops, the runtime accepts nothing: an event is left
// unacknowledged, so that Slack delivers it again, and that is logged at
// info (it is not a failure); a /talon command, which Slack never sends
// again, is answered with a notice to try again.
func TestWhileStoppingEventsUnackedCommandsTold(t *testing.T) {
	h := newHarness(t, ModeSocket, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.rt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	h.fs.send(eventsEnvelope("e1", "Ev1", dm("U1", "10.000100", "hello")))
	eventually(t, "the event refused", func() bool {
		return strings.Contains(h.adLogs.String(), "event left unacknowledged while Talon stops")
	})
	if _, acked := h.fs.ack("e1"); acked {
		t.Error("an event Talon did not accept was acknowledged")
	}
	for _, line := range strings.Split(h.adLogs.String(), "\n") {
		if strings.Contains(line, `"level":"error"`) {
			t.Errorf("logged as an error: %s", line)
		}
	}

	h.fs.send(slashEnvelope("s1", map[string]any{"team_id": team, "channel_id": "D1", "user_id": "U1", "command": "/talon", "text": "status", "trigger_id": "trig-s1"}))
	h.fs.waitAcks(t, "s1")
	ack, _ := h.fs.ack("s1")
	var got map[string]string
	if err := json.Unmarshal(ack, &got); err != nil || got["text"] != "Talon is restarting; try again in a moment." || got["response_type"] != "ephemeral" {
		t.Errorf("command ack = %s, want an ephemeral restart notice", ack)
	}
}
