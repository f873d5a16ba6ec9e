package slack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/talonhq/talon/agent"
)

// deliveryLog remembers how much of a reply was posted, so a retried
// Deliver continues where the last attempt stopped instead of posting the
// first parts twice.
type deliveryLog struct {
	first string // ts of the first part
	done  int    // parts posted
}

// stream is an answer shown while it is generated.
type stream struct {
	text strings.Builder
	ref  msgRef
	last time.Time
}

// Deliver implements agent.Channel: it renders r as mrkdwn with mentions
// neutralised, splits it under Slack's limits with balanced code fences and
// posts the parts in r's thread (editing a streamed message into the first
// part). It returns the ts of the first part. A 429 is retried once after
// Retry-After; other failures are returned (writes are never retried on
// 5xx: they can double-post).
func (a *Adapter) Deliver(ctx context.Context, r agent.Reply) (string, error) {
	if err := a.setup(); err != nil {
		return "", err
	}
	to, err := decodeReplyTo(r.ReplyTo)
	if err != nil {
		return "", err
	}
	parts := splitMessage(toMrkdwn(r.Text), a.cfg.MaxMessageChars)
	if to.Ephemeral != "" {
		var first string
		for i, p := range parts {
			ts, err := a.postEphemeral(ctx, to.Channel, to.Thread, to.Ephemeral, p)
			if err != nil {
				return "", fmt.Errorf("slack: post ephemeral reply part %d of %d: %w", i+1, len(parts), err)
			}
			if i == 0 {
				first = ts
			}
		}
		return first, nil
	}

	a.mu.Lock()
	pl := a.progress[r.ID]
	if pl == nil {
		if len(a.progress) > 1000 {
			clear(a.progress) // replies given up on; forget them
		}
		pl = &deliveryLog{}
		a.progress[r.ID] = pl
	}
	st := a.streams[r.Inbound]
	delete(a.streams, r.Inbound)
	a.mu.Unlock()

	if st != nil && st.ref.ts != "" && pl.done == 0 {
		err := a.retry429(ctx, func() error {
			_, _, _, err := a.api.UpdateMessageContext(ctx, st.ref.channel, st.ref.ts, slack.MsgOptionText(parts[0], false))
			return err
		})
		if err == nil {
			pl.first, pl.done = st.ref.ts, 1
		} else {
			a.Log.Warn().Err(err).Msg("slack: could not finish a streamed message; posting the reply anew")
		}
	}
	for i := pl.done; i < len(parts); i++ {
		ts, err := a.post(ctx, to.Channel, to.Thread, slack.MsgOptionText(parts[i], false))
		if err != nil {
			return "", fmt.Errorf("slack: post reply part %d of %d: %w", i+1, len(parts), err)
		}
		if i == 0 {
			pl.first = ts
		}
		pl.done = i + 1
	}
	a.mu.Lock()
	delete(a.progress, r.ID)
	a.mu.Unlock()
	return pl.first, nil
}

// post sends a message to channel (in thread when set) and returns its ts.
func (a *Adapter) post(ctx context.Context, channel, thread string, opts ...slack.MsgOption) (string, error) {
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	var ts string
	err := a.retry429(ctx, func() error {
		_, t, err := a.api.PostMessageContext(ctx, channel, opts...)
		ts = t
		return err
	})
	return ts, err
}

// ephemeral shows text to user only.
func (a *Adapter) ephemeral(ctx context.Context, channel, thread, user, text string) error {
	_, err := a.postEphemeral(ctx, channel, thread, user, escape(text))
	return err
}

func (a *Adapter) postEphemeral(ctx context.Context, channel, thread, user, mrkdwn string) (string, error) {
	opts := []slack.MsgOption{slack.MsgOptionText(mrkdwn, false)}
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	var ts string
	err := a.retry429(ctx, func() error {
		t, err := a.api.PostEphemeralContext(ctx, channel, user, opts...)
		ts = t
		return err
	})
	return ts, err
}

// retry429 calls fn, and once more after Retry-After when Slack answered 429.
func (a *Adapter) retry429(ctx context.Context, fn func() error) error {
	err := fn()
	var rl *slack.RateLimitedError
	if !errors.As(err, &rl) {
		return err
	}
	wait := min(max(rl.RetryAfter, time.Second), 2*time.Minute)
	a.Log.Warn().Dur("retry_after", wait).Msg("slack: rate limited")
	if !sleepCtx(ctx, wait) {
		return ctx.Err()
	}
	return fn()
}

// Stream implements agent.Streamer. With Config.StreamEdits it posts the
// answer so far and edits it at most once per StreamInterval; Deliver then
// edits it into the final text. Failures only cost the preview.
func (a *Adapter) Stream(ctx context.Context, id agent.InboundID, _ agent.SessionKey, rt string, delta string) {
	if a.setup() != nil || !a.cfg.StreamEdits || delta == "" {
		return
	}
	to, err := decodeReplyTo(rt)
	if err != nil || to.Ephemeral != "" {
		return
	}
	now := a.now()
	a.mu.Lock()
	st := a.streams[id]
	if st == nil {
		if len(a.streams) > 1000 {
			clear(a.streams)
		}
		st = &stream{ref: msgRef{channel: to.Channel}}
		a.streams[id] = st
	}
	st.text.WriteString(delta)
	due := st.ref.ts == "" || now.Sub(st.last) >= a.cfg.StreamInterval
	text := st.text.String()
	ts := st.ref.ts
	if due {
		st.last = now
	}
	a.mu.Unlock()
	if !due {
		return
	}
	preview := splitMessage(toMrkdwn(text), a.cfg.MaxMessageChars)[0]
	if ts == "" {
		newTS, err := a.post(ctx, to.Channel, to.Thread, slack.MsgOptionText(preview, false))
		if err != nil {
			a.Log.Debug().Err(err).Msg("slack: stream preview not posted")
			return
		}
		a.mu.Lock()
		st.ref.ts = newTS
		a.mu.Unlock()
		return
	}
	if _, _, _, err := a.api.UpdateMessageContext(ctx, to.Channel, ts, slack.MsgOptionText(preview, false)); err != nil {
		a.Log.Debug().Err(err).Msg("slack: stream preview not updated")
	}
}

// Working implements agent.Typer with assistant.threads.setStatus in the
// reply's thread; errors are ignored (the status is a nicety, and needs a
// thread).
func (a *Adapter) Working(ctx context.Context, _ agent.SessionKey, rt string) (stop func()) {
	to, err := decodeReplyTo(rt)
	if a.setup() != nil || err != nil || to.Thread == "" || to.Ephemeral != "" {
		return func() {}
	}
	set := func(ctx context.Context, status string) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = a.api.SetAssistantThreadsStatusContext(ctx, slack.AssistantThreadsSetStatusParameters{
			ChannelID: to.Channel, ThreadTS: to.Thread, Status: status,
		})
	}
	set(ctx, a.cfg.StatusText)
	return func() { set(context.WithoutCancel(ctx), "") }
}
