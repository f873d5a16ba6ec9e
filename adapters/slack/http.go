package slack

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/talonhq/talon/agent"
)

const (
	maxBodyBytes    = 1 << 20
	signatureMaxAge = 5 * time.Minute
)

// EventsHandler returns the handler for Slack's HTTP deliveries (events
// mode): Events API callbacks (JSON), interactivity (form field payload) and
// slash commands (form field command), all on one URL. Every request must
// carry a valid X-Slack-Signature no older than five minutes, else 401.
// Events are answered 200 only after they are persisted (500 otherwise, so
// Slack retries).
func (a *Adapter) EventsHandler() http.Handler {
	return http.HandlerFunc(a.serveHTTP)
}

func (a *Adapter) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := a.setup(); err != nil || a.cfg.SigningSecret == "" || a.Runtime == nil {
		http.Error(w, "slack events are not configured", http.StatusServiceUnavailable)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	if !a.verify(r.Header, body) {
		a.Log.Warn().Str("remote", r.RemoteAddr).Msg("slack: request with a bad or stale signature refused")
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()

	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var probe struct {
			Type      string `json:"type"`
			Challenge string `json:"challenge"`
		}
		if err := json.Unmarshal(body, &probe); err != nil {
			a.Log.Warn().Msg("slack: malformed event body dropped")
			w.WriteHeader(http.StatusOK)
			return
		}
		if probe.Type == "url_verification" {
			writeJSON(w, map[string]string{"challenge": probe.Challenge})
			return
		}
		if err := a.handleCallback(ctx, body); err != nil {
			if errors.Is(err, agent.ErrStopping) {
				a.Log.Info().Msg("slack: event refused while Talon stops; answering 503 for Slack to deliver it again")
				http.Error(w, "stopping", http.StatusServiceUnavailable)
				return
			}
			a.Log.Error().Err(err).Msg("slack: event not persisted; answering 500 for Slack to retry")
			http.Error(w, "not persisted", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}

	form, err := url.ParseQuery(string(body))
	if err != nil {
		http.Error(w, "malformed form", http.StatusBadRequest)
		return
	}
	switch {
	case form.Get("payload") != "":
		if err := a.waitReady(ctx); err != nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if resp := a.handleInteraction(ctx, []byte(form.Get("payload"))); resp != nil {
			writeJSON(w, resp)
			return
		}
		w.WriteHeader(http.StatusOK)
	case form.Get("command") != "":
		resp, err := a.handleSlash(ctx, slashFromForm(form))
		if err != nil {
			a.Log.Error().Err(err).Msg("slack: command not persisted")
			http.Error(w, "not persisted", http.StatusInternalServerError)
			return
		}
		if resp != nil {
			writeJSON(w, resp)
			return
		}
		w.WriteHeader(http.StatusOK)
	default:
		http.Error(w, "unknown request", http.StatusBadRequest)
	}
}

// verify checks Slack's request signature: v0=hex(HMAC-SHA256(signing
// secret, "v0:" + timestamp + ":" + body)), compared in constant time, with
// the timestamp within five minutes of now.
func (a *Adapter) verify(h http.Header, body []byte) bool {
	ts := h.Get("X-Slack-Request-Timestamp")
	sig := h.Get("X-Slack-Signature")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return false
	}
	if d := a.now().Sub(time.Unix(sec, 0)); d > signatureMaxAge || d < -signatureMaxAge {
		return false
	}
	return hmac.Equal([]byte(sign(a.cfg.SigningSecret, ts, body)), []byte(sig))
}

// sign computes the X-Slack-Signature value.
func sign(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + ts + ":"))
	m.Write(body)
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

func slashFromForm(f url.Values) slack.SlashCommand {
	return slack.SlashCommand{
		TeamID:       f.Get("team_id"),
		EnterpriseID: f.Get("enterprise_id"),
		ChannelID:    f.Get("channel_id"),
		UserID:       f.Get("user_id"),
		Command:      f.Get("command"),
		Text:         f.Get("text"),
		TriggerID:    f.Get("trigger_id"),
		ResponseURL:  f.Get("response_url"),
		APIAppID:     f.Get("api_app_id"),
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
