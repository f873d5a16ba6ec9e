package discord

import (
	"context"
	"strings"
	"testing"

	"github.com/talonhq/talon/agent"
)

// refusingSecrets refuses every secret as the vault refuses a short value.
type refusingSecrets struct{ recordingSecrets }

const refusal = "the value is 7 bytes; a secret must be at least 8 bytes"

func (s *refusingSecrets) AddSecret(context.Context, agent.Principal, agent.NewSecret) error {
	return &agent.SecretError{Field: "value", Reason: refusal}
}

// TestSecretModalShowsRefusal submits the secret form with a value the
// vault refuses: the person is told why, not only given a reference.
func TestSecretModalShowsRefusal(t *testing.T) {
	const value = "hunter2"
	e := start(t, options{secrets: &refusingSecrets{}})
	row := func(id, v string) map[string]any {
		return map[string]any{"type": 1, "components": []any{map[string]any{"type": 4, "custom_id": id, "value": v}}}
	}
	e.f.dispatch("INTERACTION_CREATE", map[string]any{
		"id": "903", "application_id": "200", "type": 5, "token": "tok-903", "channel_id": dmChannel,
		"user": map[string]any{"id": "7", "username": "u"},
		"data": map[string]any{"custom_id": "talon:secret-add", "components": []any{
			row("name", "pin"), row("value", value), row("hosts", "api.example.com"), row("injection", ""),
		}},
	})
	waitFor(t, "modal answer", func() bool { return len(e.f.callbacksSnapshot()) == 1 })
	c := e.f.callbacksSnapshot()[0]
	if c.Type != 4 || c.Data["flags"] != float64(64) || c.Data["content"] != "Not stored: "+refusal {
		t.Errorf("modal answer = %+v, want an ephemeral refusal with the reason", c)
	}
	if strings.Contains(e.logs.String(), value) {
		t.Error("the value reached the log")
	}
}
