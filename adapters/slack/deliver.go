package slack

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
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

// stream is an answer shown while it is generated: one message, posted
// with the first words and edited as more arrive.
type stream struct {
	text strings.Builder
	ref  msgRef    // ts is "" until the message is posted
	next time.Time // no post or edit before this (StreamInterval, Retry-After, pacing)
}

// Deliver implements agent.Channel: it renders r as mrkdwn with mentions
// neutralised, splits it under Slack's limits with balanced code fences and
// posts the parts in r's thread (editing a streamed message into the first
// part, then posting the others). It returns the ts of the first part.
// Parts are paced per channel (see pacer); a 429 is retried once after
// Retry-After; other failures are returned (writes are never retried on
// 5xx: they can double-post), and a later call for the same r continues
// with the first part not yet posted.
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
		return a.deliverEphemeral(ctx, to, parts)
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
	a.mu.Unlock()

	if st != nil && pl.done == 0 {
		a.mu.Lock()
		ref, next := st.ref, st.next
		a.mu.Unlock()
		if ref.ts != "" {
			switch err := a.finishStream(ctx, ref, next, parts[0]); {
			case err == nil:
				pl.first, pl.done = ref.ts, 1
			case !errors.Is(err, errNotStreamed):
				return "", err
			}
		}
	}
	if st != nil {
		a.mu.Lock()
		delete(a.streams, r.Inbound)
		a.mu.Unlock()
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

// maxResponses is how many messages Slack takes on one response_url.
const maxResponses = 5

// deliverEphemeral shows the parts of a reply to to.Ephemeral only: through
// the slash command's response_url while it is valid (Slack takes five
// posts there, for 30 minutes; it works where the bot is not a member),
// and for what that cannot carry (expired, failed, more parts) with
// chat.postEphemeral, which needs the bot in the conversation.
func (a *Adapter) deliverEphemeral(ctx context.Context, to replyTo, parts []string) (string, error) {
	done := 0
	if to.ResponseURL != "" && a.now().Before(time.Unix(to.Until, 0)) {
		for ; done < min(len(parts), maxResponses); done++ {
			if err := a.respond(ctx, to.ResponseURL, parts[done]); err != nil {
				if ctx.Err() != nil {
					return "", err
				}
				a.Log.Warn().Err(err).Str("channel_id", to.Channel).Msg("slack: response_url refused the answer; posting it as an ephemeral message")
				break
			}
		}
	}
	var first string
	for i := done; i < len(parts); i++ {
		ts, err := a.postEphemeral(ctx, to.Channel, to.Thread, to.Ephemeral, parts[i])
		if err != nil {
			return "", fmt.Errorf("slack: post ephemeral reply part %d of %d: %w", i+1, len(parts), err)
		}
		if first == "" {
			first = ts
		}
	}
	return first, nil
}

// respond posts one ephemeral message to a slash command's response_url.
// The URL is a bearer capability: the error returned never contains it.
func (a *Adapter) respond(ctx context.Context, responseURL, mrkdwn string) error {
	err := slack.PostWebhookCustomHTTPContext(ctx, responseURL, a.hc, &slack.WebhookMessage{
		Text: mrkdwn, ResponseType: slack.ResponseTypeEphemeral,
	})
	if err == nil {
		return nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("slack: post to response_url: %s: %w", ue.Op, ue.Err)
	}
	var se slack.StatusCodeError
	if errors.As(err, &se) {
		return fmt.Errorf("slack: post to response_url: status %d", se.Code)
	}
	return errors.New("slack: post to response_url failed")
}

// finishStream edits the streamed message ref into text, keeping to the
// stream's pace (waiting at most one StreamInterval; a 429 is retried by
// retry429). A failure Slack may get over (network, 5xx, rate limits) is
// returned, for the runtime to call Deliver again. When Slack refuses the
// edit for good (the message was deleted, say), the preview is removed and
// errNotStreamed returned: the reply is then posted anew.
func (a *Adapter) finishStream(ctx context.Context, ref msgRef, next time.Time, text string) error {
	if !a.sleep(ctx, min(next.Sub(a.now()), a.cfg.StreamInterval)) {
		return ctx.Err()
	}
	err := a.retry429(ctx, func() error {
		_, _, _, err := a.api.UpdateMessageContext(ctx, ref.channel, ref.ts, slack.MsgOptionText(text, false))
		return err
	})
	var se slack.SlackErrorResponse
	if err == nil || !errors.As(err, &se) {
		if err != nil {
			return fmt.Errorf("slack: finish streamed reply: %w", err)
		}
		return nil
	}
	a.Log.Warn().Err(err).Msg("slack: could not finish a streamed message; posting the reply anew")
	if _, _, err := a.api.DeleteMessageContext(ctx, ref.channel, ref.ts); err != nil {
		a.Log.Debug().Err(err).Msg("slack: stream preview not deleted")
	}
	return errNotStreamed
}

// errNotStreamed: the streamed message could not become the reply.
var errNotStreamed = errors.New("slack: streamed message not updatable")

// post sends a message to channel (in thread when set) and returns its ts,
// waiting first for the channel's pace (see pacer).
func (a *Adapter) post(ctx context.Context, channel, thread string, opts ...slack.MsgOption) (string, error) {
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	wait, _ := a.pace.reserve(channel, a.now(), false)
	if !a.sleep(ctx, wait) {
		return "", ctx.Err()
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
	wait := retryAfter(rl)
	a.Log.Warn().Dur("retry_after", wait).Msg("slack: rate limited")
	if !a.sleep(ctx, wait) {
		return ctx.Err()
	}
	return fn()
}

// retryAfter bounds Slack's Retry-After to [1 s, 2 min].
func retryAfter(rl *slack.RateLimitedError) time.Duration {
	return min(max(rl.RetryAfter, time.Second), 2*time.Minute)
}

// Stream implements agent.Streamer. With Config.StreamEdits it posts the
// answer so far in the reply's thread and edits it at most once per
// StreamInterval; Deliver then edits it into the final text (further parts
// of a long answer follow as new messages). Stream never sleeps (a Slack
// call is bounded to 5 s), so the model's stream is barely held up. A delta
// that arrives too early is shown with the next edit; a post that the
// channel's pace or a 429 does not allow now waits for a later delta.
// Failures only cost the preview.
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
			clear(a.streams) // answers never delivered; forget them
		}
		st = &stream{ref: msgRef{channel: to.Channel}}
		a.streams[id] = st
	}
	st.text.WriteString(delta)
	text, ts, due := st.text.String(), st.ref.ts, !now.Before(st.next)
	a.mu.Unlock()
	if !due || strings.TrimSpace(text) == "" {
		return
	}
	preview := splitMessage(toMrkdwn(text), a.cfg.MaxMessageChars)[0]
	next := now.Add(a.cfg.StreamInterval)
	// A slow Slack holds up the model's stream for at most this long.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ts == "" {
		if wait, ok := a.pace.reserve(to.Channel, now, true); !ok {
			a.setStreamNext(st, now.Add(wait))
			return
		}
		opts := []slack.MsgOption{slack.MsgOptionText(preview, false)}
		if to.Thread != "" {
			opts = append(opts, slack.MsgOptionTS(to.Thread))
		}
		_, newTS, err := a.api.PostMessageContext(ctx, to.Channel, opts...)
		if err == nil {
			a.mu.Lock()
			st.ref.ts = newTS
			a.mu.Unlock()
		}
		a.setStreamNext(st, a.afterStreamCall(err, now, next, "posted"))
		return
	}
	_, _, _, err = a.api.UpdateMessageContext(ctx, to.Channel, ts, slack.MsgOptionText(preview, false))
	a.setStreamNext(st, a.afterStreamCall(err, now, next, "updated"))
}

// afterStreamCall logs a failed preview call and returns when the next may
// be made: next, or after Slack's Retry-After.
func (a *Adapter) afterStreamCall(err error, now, next time.Time, what string) time.Time {
	if err == nil {
		return next
	}
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		next = now.Add(max(retryAfter(rl), a.cfg.StreamInterval))
	}
	a.Log.Debug().Err(err).Msg("slack: stream preview not " + what)
	return next
}

func (a *Adapter) setStreamNext(st *stream, next time.Time) {
	a.mu.Lock()
	st.next = next
	a.mu.Unlock()
}

// Working implements agent.Typer with assistant.threads.setStatus in the
// reply's thread (Config.StatusText), cleared by stop with an empty status.
// The status needs a thread: mentions are answered in one, and Slack's
// assistant DMs are threaded; a top-level DM shows none. Errors are logged
// at debug level only (the status is a nicety, and Slack refuses it outside
// assistant threads).
func (a *Adapter) Working(ctx context.Context, _ agent.SessionKey, rt string) (stop func()) {
	to, err := decodeReplyTo(rt)
	if a.setup() != nil || err != nil || to.Thread == "" || to.Ephemeral != "" {
		return func() {}
	}
	set := func(ctx context.Context, status string) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		err := a.api.SetAssistantThreadsStatusContext(ctx, slack.AssistantThreadsSetStatusParameters{
			ChannelID: to.Channel, ThreadTS: to.Thread, Status: status,
		})
		if err != nil {
			a.Log.Debug().Err(err).Bool("clear", status == "").Msg("slack: assistant status not set")
		}
	}
	set(ctx, a.cfg.StatusText)
	var once sync.Once
	return func() { once.Do(func() { set(context.WithoutCancel(ctx), "") }) }
}
