package slack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"github.com/talonhq/talon/adapters/internal/chat"
	"github.com/talonhq/talon/agent"
)

// postBurst is how many messages a channel may receive back to back before
// pacing starts. Slack allows about one chat.postMessage per second per
// channel, with short bursts over that.
const postBurst = 3

// stream is an answer shown while it is generated: one message, posted
// with the first words and edited as more arrive (at most once per
// StreamInterval: the adapter's chat.Streams paces it).
type stream struct {
	mu   sync.Mutex // guards the fields below
	text strings.Builder
	ref  msgRef // ts is "" until the message is posted
}

// split cuts mrkdwn into Slack messages of at most MaxMessageChars bytes.
func (a *Adapter) split(mrkdwn string) []string {
	parts := chat.Split(mrkdwn, a.cfg.MaxMessageChars, chat.Bytes)
	if len(parts) == 0 {
		return []string{"(empty reply)"}
	}
	return parts
}

// Deliver implements agent.Channel: it renders r as mrkdwn with mentions
// neutralised, splits it under Slack's limits with balanced code fences and
// posts the parts in r's thread (editing a streamed message into the first
// part, then posting the others). It returns the ts of the first part.
//
// Each part is recorded (r.Record) as soon as it is posted, and the parts
// r.Posted lists are not posted again: a delivery cut short, by a failure
// or a crash, continues with the first part not recorded. Each part also
// carries message metadata naming the reply and the part, and a resumed
// delivery (r.Resumed) first looks in the thread for parts that were
// posted but not recorded (see findPosted), so that even the one part
// between a post and its record is not posted twice where Slack lets the
// bot read its history. Parts are paced per channel; a 429 is retried once
// after Retry-After; other failures are returned (writes are never retried
// on 5xx: they can double-post).
func (a *Adapter) Deliver(ctx context.Context, r agent.Reply) (string, error) {
	if err := a.setup(); err != nil {
		return "", err
	}
	to, err := decodeReplyTo(r.ReplyTo)
	if err != nil {
		return "", err
	}
	if to.Ephemeral != "" {
		// An ephemeral message carries no file: the reply is split whole.
		return a.deliverEphemeral(ctx, r, to, a.split(toMrkdwn(r.Text)))
	}
	text, cut := chat.Outsized(r.Text, a.cfg.MaxMessageChars, chat.Bytes, chat.MaxParts, fileprefix(r.ID))
	files := chat.WithReplyFiles(cut, r.Files)
	parts := a.split(toMrkdwn(text))

	posted := map[int]string{} // part → ts, of the parts posted
	preview := ""              // the ts of the message that showed the answer while it streamed
	for _, p := range r.Posted {
		if p.Preview {
			preview = p.PlatformID
		} else {
			posted[p.N] = p.PlatformID
		}
	}
	if st, ok := a.streams.Finish(r.Inbound); ok && preview == "" {
		st.mu.Lock()
		preview = st.ref.ts
		st.mu.Unlock()
	}
	if r.Resumed && len(posted) < len(parts)+len(files) {
		names := map[string]int{}
		for k, f := range files {
			names[slackFileName(r.ID, f)] = len(parts) + k
		}
		found, pv := a.findPosted(ctx, to, r, names)
		for n, ts := range found {
			if _, ok := posted[n]; !ok && n < len(parts)+len(files) {
				posted[n] = ts
				record(ctx, r, n, ts)
			}
		}
		if preview == "" {
			preview = pv
		}
	}
	if _, ok := posted[0]; !ok && preview != "" {
		switch err := a.finishStream(ctx, r, msgRef{channel: to.Channel, ts: preview}, parts[0]); {
		case err == nil:
			posted[0] = preview
			record(ctx, r, 0, preview)
		case !errors.Is(err, errNotStreamed):
			return "", err
		}
	}
	for i := range parts {
		if _, ok := posted[i]; ok {
			continue
		}
		ts, err := a.post(ctx, to.Channel, to.Thread, slack.MsgOptionText(parts[i], false), partMetadata(r.ID, i), a.unfurl(parts[i]))
		if err != nil {
			return "", fmt.Errorf("slack: post reply part %d of %d: %w", i+1, len(parts), err)
		}
		posted[i] = ts
		record(ctx, r, i, ts)
	}
	for k, f := range files {
		n := len(parts) + k
		if _, ok := posted[n]; ok {
			continue
		}
		id, err := a.upload(ctx, to, slackFileName(r.ID, f), f)
		if errors.Is(err, errNoFilesWrite) {
			// The app was installed without files:write: say so where
			// the file would be, rather than fail the whole reply.
			a.Log.Warn().Str("channel_id", to.Channel).Msg("slack: the app lacks the files:write scope; a reply's file was not sent (add the scope, see the manifest, and reinstall the app)")
			id, err = a.post(ctx, to.Channel, to.Thread, slack.MsgOptionText(escape(fmt.Sprintf(
				"I could not attach %s: this Slack app lacks the files:write scope (an admin can add it and reinstall the app).", f.Name)), false),
				partMetadata(r.ID, n), noUnfurl())
		}
		if err != nil {
			return "", fmt.Errorf("slack: upload file %d of %d of the reply: %w", k+1, len(files), err)
		}
		posted[n] = id
		record(ctx, r, n, id)
	}
	a.streams.Drop(r.Inbound)
	return posted[0], nil
}

// slackFileName is the name f is uploaded with for reply id: its own when
// it is a block cut from the reply (talon-r12-1.go), else prefixed with the
// reply (talon-r12-report.csv), so that every file of every reply has a
// name of its own for findPosted; Slack shows the file's title, its own
// name.
func slackFileName(id agent.ReplyID, f chat.File) string {
	p := fileprefix(id) + "-"
	if strings.HasPrefix(f.Name, p) {
		return f.Name
	}
	return p + f.Name
}

// fileprefix names the files of reply id: talon-r<id>-1.go, … The reply's
// id in the name lets a resumed delivery find a file it uploaded but did
// not record (see findPosted).
func fileprefix(id agent.ReplyID) string {
	return fmt.Sprintf("talon-r%d", id)
}

// upload shares f, named name, in to's conversation (in its thread) with Slack's
// external upload: files.getUploadURLExternal, the bytes posted to the URL
// it returns, and files.completeUploadExternal, which shares the file as a
// message of the bot. It returns the file's id. A file's contents are
// never unfurled by Slack, whatever links they hold. The upload is paced
// with the channel's messages; a 429 is retried once after Retry-After.
// Only completeUploadExternal makes the file visible: a failure before it
// leaves an unshared upload that Slack discards, and the delivery's retry
// uploads anew.
func (a *Adapter) upload(ctx context.Context, to replyTo, name string, f chat.File) (string, error) {
	wait, _ := a.pace.Reserve(to.Channel, a.now(), false)
	if !a.sleep(ctx, wait) {
		return "", ctx.Err()
	}
	var u *slack.GetUploadURLExternalResponse
	err := a.retry429(ctx, func() error {
		var err error
		u, err = a.api.GetUploadURLExternalContext(ctx, slack.GetUploadURLExternalParameters{
			FileName: name, FileSize: len(f.Content), SnippetType: snippetType(f),
		})
		return err
	})
	var se slack.SlackErrorResponse
	if errors.As(err, &se) && (se.Err == "missing_scope" || se.Err == "no_permission") {
		return "", errNoFilesWrite
	}
	if err != nil {
		return "", fmt.Errorf("files.getUploadURLExternal: %w", err)
	}
	err = a.api.UploadToURL(ctx, slack.UploadToURLParameters{UploadURL: u.UploadURL, Filename: name, Reader: bytes.NewReader(f.Content)})
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", f.Name, uploadErr(err))
	}
	var done *slack.CompleteUploadExternalResponse
	err = a.retry429(ctx, func() error {
		var err error
		done, err = a.api.CompleteUploadExternalContext(ctx, slack.CompleteUploadExternalParameters{
			Files: []slack.FileSummary{{ID: u.FileID, Title: f.Name}}, Channel: to.Channel, ThreadTimestamp: to.Thread,
		})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("files.completeUploadExternal: %w", err)
	}
	if len(done.Files) == 1 && done.Files[0].ID != "" {
		return done.Files[0].ID, nil
	}
	return u.FileID, nil
}

// errNoFilesWrite: Slack refused an upload for a missing scope.
var errNoFilesWrite = errors.New("slack: the app lacks the files:write scope")

// uploadErr keeps the upload URL (a capability) out of an error.
func uploadErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// snippetType is the syntax Slack highlights a code file with ("" lets it
// guess from the name).
func snippetType(f chat.File) string {
	if f.Table {
		return "markdown"
	}
	return ""
}

// record tells the runtime that part n of r is posted as ts.
func record(ctx context.Context, r agent.Reply, n int, ts string) {
	if r.Record != nil {
		r.Record(ctx, agent.PostedPart{N: n, PlatformID: ts})
	}
}

// maxResponses is how many messages Slack takes on one response_url.
const maxResponses = 5

// deliverEphemeral shows the parts of a reply to to.Ephemeral only: through
// the slash command's response_url while it is valid (Slack takes five
// posts there, for 30 minutes; it works where the bot is not a member),
// and for what that cannot carry (expired, failed, more parts) with
// chat.postEphemeral, which needs the bot in the conversation. Parts are
// recorded as they are posted, as in Deliver; an ephemeral message cannot
// be found again, so a crash between a post and its record may show that
// part twice.
func (a *Adapter) deliverEphemeral(ctx context.Context, r agent.Reply, to replyTo, parts []string) (string, error) {
	var first string
	if p, ok := r.PostedPart(0); ok {
		first = p.PlatformID
	}
	if to.ResponseURL != "" && a.now().Before(time.Unix(to.Until, 0)) {
		for i := range min(len(parts), maxResponses) {
			if _, ok := r.PostedPart(i); ok {
				continue
			}
			if err := a.respond(ctx, to.ResponseURL, parts[i]); err != nil {
				if ctx.Err() != nil {
					return "", err
				}
				a.Log.Warn().Err(err).Str("channel_id", to.Channel).Msg("slack: response_url refused the answer; posting it as an ephemeral message")
				break
			}
			r.Posted = append(r.Posted, agent.PostedPart{N: i})
			record(ctx, r, i, "")
		}
	}
	for i := range parts {
		if _, ok := r.PostedPart(i); ok {
			continue
		}
		ts, err := a.postEphemeral(ctx, to.Channel, to.Thread, to.Ephemeral, parts[i])
		if err != nil {
			return "", fmt.Errorf("slack: post ephemeral reply part %d of %d: %w", i+1, len(parts), err)
		}
		record(ctx, r, i, ts)
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

// finishStream edits the streamed message ref (of the answer to r's
// inbound) into text, r's first part, keeping to the stream's pace
// (waiting at most one StreamInterval; a 429 is retried by retry429). A
// failure Slack may get over (network, 5xx, rate limits) is returned, for
// the runtime to call Deliver again. When Slack refuses the edit for good
// (the message was deleted, say), the preview is removed and
// errNotStreamed returned: the reply is then posted anew.
func (a *Adapter) finishStream(ctx context.Context, r agent.Reply, ref msgRef, text string) error {
	if !a.sleep(ctx, min(a.streams.Wait(r.Inbound, a.now()), a.cfg.StreamInterval)) {
		return ctx.Err()
	}
	a.streams.Reserve(r.Inbound, a.now())
	err := a.retry429(ctx, func() error {
		_, _, _, err := a.api.UpdateMessageContext(ctx, ref.channel, ref.ts, slack.MsgOptionText(text, false), partMetadata(r.ID, 0), noUnfurl())
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

// unfurl is the option that lets Slack unfurl a message with text only
// when every link in it is trusted (chat.Unfurl); otherwise noUnfurl.
func (a *Adapter) unfurl(text string) slack.MsgOption {
	if chat.Unfurl(text, a.cfg.TrustedLinks) {
		return slack.MsgOptionCompose()
	}
	return noUnfurl()
}

// noUnfurl turns off Slack's link and media previews of a message.
func noUnfurl() slack.MsgOption {
	return slack.MsgOptionCompose(slack.MsgOptionDisableLinkUnfurl(), slack.MsgOptionDisableMediaUnfurl())
}

// post sends a message to channel (in thread when set) and returns its ts,
// waiting first for the channel's pace (see pacer).
func (a *Adapter) post(ctx context.Context, channel, thread string, opts ...slack.MsgOption) (string, error) {
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	wait, _ := a.pace.Reserve(channel, a.now(), false)
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

// NoticePrivately implements agent.Noticer: n.Text is shown to key's user
// only, through the slash command's response_url while it is valid, else
// with chat.postEphemeral in the conversation replyTo names (so n.Public
// is never needed).
func (a *Adapter) NoticePrivately(ctx context.Context, key agent.SessionKey, replyTo string, n agent.Notice) error {
	text := n.Text
	if err := a.setup(); err != nil {
		return err
	}
	to, err := decodeReplyTo(replyTo)
	if err != nil {
		return err
	}
	if to.ResponseURL != "" && a.now().Unix() < to.Until {
		if err := a.respond(ctx, to.ResponseURL, escape(text)); err == nil {
			return nil
		}
	}
	return a.ephemeral(ctx, to.Channel, to.Thread, key.Principal.User, text)
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
// Failures only cost the preview, and so does a full set of live streams
// (see chat.Streams).
func (a *Adapter) Stream(ctx context.Context, id agent.InboundID, _ agent.SessionKey, rt string, delta string) {
	if a.setup() != nil || !a.cfg.StreamEdits || delta == "" {
		return
	}
	to, err := decodeReplyTo(rt)
	if err != nil || to.Ephemeral != "" {
		return
	}
	now := a.now()
	st, ok := a.streams.Open(id, now)
	if !ok {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.text.WriteString(delta)
	text := st.text.String()
	if strings.TrimSpace(text) == "" || !a.streams.Due(id, now) {
		return
	}
	preview := a.split(toMrkdwn(text))[0]
	// A slow Slack holds up the model's stream for at most this long.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if st.ref.ts == "" {
		if wait, ok := a.pace.Reserve(to.Channel, now, true); !ok {
			a.streams.Defer(id, now.Add(wait))
			return
		}
		a.streams.Reserve(id, now)
		// A preview never unfurls: the links still to come are unknown,
		// and its edits become the reply.
		opts := []slack.MsgOption{slack.MsgOptionText(preview, false), previewMetadata(id), noUnfurl()}
		if to.Thread != "" {
			opts = append(opts, slack.MsgOptionTS(to.Thread))
		}
		_, ts, err := a.api.PostMessageContext(ctx, to.Channel, opts...)
		if err == nil {
			st.ref = msgRef{channel: to.Channel, ts: ts}
			// Recorded at once: after a crash the reply's delivery edits
			// this message instead of leaving it and posting the answer.
			if a.Runtime != nil {
				if err := a.Runtime.Previewed(ctx, id, ts); err != nil {
					a.Log.Warn().Err(err).Int64("inbound", int64(id)).Msg("slack: stream preview not recorded")
				}
			}
		}
		a.afterStreamCall(id, err, now, "posted")
		return
	}
	a.streams.Reserve(id, now)
	_, _, _, err = a.api.UpdateMessageContext(ctx, st.ref.channel, st.ref.ts, slack.MsgOptionText(preview, false), noUnfurl())
	a.afterStreamCall(id, err, now, "updated")
}

// afterStreamCall logs a failed preview call and, after a 429, holds the
// stream's next write until Slack's Retry-After.
func (a *Adapter) afterStreamCall(id agent.InboundID, err error, now time.Time, what string) {
	if err == nil {
		return
	}
	var rl *slack.RateLimitedError
	if errors.As(err, &rl) {
		a.streams.Defer(id, now.Add(max(retryAfter(rl), a.cfg.StreamInterval)))
	}
	a.Log.Debug().Err(err).Msg("slack: stream preview not " + what)
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

// ShowStatus implements agent.Statuser: text (a tool's progress, made safe
// by the runtime) joins Config.StatusText in the reply thread's assistant
// status, "is thinking… (40% — indexing)". Where Working shows no status
// (no thread) it shows none either.
func (a *Adapter) ShowStatus(ctx context.Context, _ agent.SessionKey, rt, text string) error {
	to, err := decodeReplyTo(rt)
	if err != nil || to.Thread == "" || to.Ephemeral != "" {
		return nil
	}
	if err := a.setup(); err != nil {
		return err
	}
	err = a.api.SetAssistantThreadsStatusContext(ctx, slack.AssistantThreadsSetStatusParameters{
		ChannelID: to.Channel, ThreadTS: to.Thread, Status: a.cfg.StatusText + " (" + text + ")",
	})
	if err != nil {
		return fmt.Errorf("slack: set assistant status: %w", err)
	}
	return nil
}

var _ agent.Statuser = (*Adapter)(nil)
