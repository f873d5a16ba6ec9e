package discord

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/agent"
)

// stream is an answer shown while it is generated (Config.StreamEdits).
// The runtime calls Stream from the turn's goroutine, one delta after the
// other, and Deliver after the turn; mu also keeps a Deliver from running
// during a streamed edit.
type stream struct {
	created time.Time // read-only

	mu      sync.Mutex // guards the fields below; held during the stream's REST calls
	text    strings.Builder
	channel string    // where the streamed message is
	message string    // its id; "" until posted
	shown   string    // the content it shows
	last    time.Time // when it was posted or last edited
	stopped bool      // a post or edit failed: the preview stops there
}

// streamTTL is how long a stream is remembered after it started, so that a
// repeated Deliver of its reply edits the same message again.
const streamTTL = 30 * time.Minute

// maxStreams bounds the streams remembered; older ones are dropped first.
const maxStreams = 1000

// Stream implements agent.Streamer. With Config.StreamEdits it posts the
// first words of the answer (in the thread the answer goes to, with the
// same reply reference as the final answer) and then edits that message
// with the text so far at most once per Config.StreamInterval. Deliver
// replaces it with the final answer. Failures only cost the preview. A
// /talon command's answer is not streamed (it is private and deferred).
func (a *Adapter) Stream(ctx context.Context, id agent.InboundID, _ agent.SessionKey, replyToStr string, delta string) {
	if delta == "" {
		return
	}
	if _, err := a.ready(ctx); err != nil || !a.cfg.StreamEdits {
		return
	}
	to, err := parseReplyTo(replyToStr)
	if err != nil || to.interaction != "" {
		return
	}
	st := a.streamFor(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.text.WriteString(delta)
	if st.stopped {
		return
	}
	now := a.Now()
	if st.message != "" && now.Sub(st.last) < a.cfg.StreamInterval {
		return
	}
	preview := a.preview(st.text.String())
	if preview == "" || preview == st.shown {
		return
	}
	log := a.Log.With().Int64("inbound", int64(id)).Logger()
	if st.message == "" {
		channel, ref := a.target(ctx, to)
		m, err := a.send(ctx, channel, outgoing{content: preview, replyTo: ref, nonce: nonce("s", int64(id), 0)})
		if err != nil {
			log.Debug().Err(err).Msg("discord: stream preview not posted")
			st.stopped = true
			return
		}
		st.channel, st.message, st.shown, st.last = channel, m.ID, preview, now
		return
	}
	if err := a.edit(ctx, st.channel, st.message, preview); err != nil {
		log.Debug().Err(err).Msg("discord: stream preview not updated")
		st.stopped = true
		return
	}
	st.shown, st.last = preview, now
}

// streamFor returns the stream of inbound id, creating it.
func (a *Adapter) streamFor(id agent.InboundID) *stream {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.streams[id]; st != nil {
		return st
	}
	now := a.Now()
	if len(a.streams) >= maxStreams {
		for k, st := range a.streams {
			if now.Sub(st.created) > streamTTL {
				delete(a.streams, k)
			}
		}
		if len(a.streams) >= maxStreams {
			clear(a.streams)
		}
	}
	st := &stream{created: now}
	a.streams[id] = st
	return st
}

// preview is what a streamed message shows for text: its first message's
// worth, code fences closed, "" when there is nothing to show yet.
func (a *Adapter) preview(text string) string {
	parts := splitMessage(text, a.cfg.MaxMessageChars-len("\n"+fenceClose))
	if len(parts) == 0 {
		return ""
	}
	p := parts[0]
	if strings.Count(p, fenceClose)%2 != 0 {
		p += "\n" + fenceClose
	}
	return p
}

// deliverStreamed puts r in place of its streamed message: the first part
// by an edit, the rest as new messages. ok is false when r was not
// streamed (or its message is gone), and the caller posts it instead.
func (a *Adapter) deliverStreamed(ctx context.Context, r agent.Reply, parts []string) (id string, ok bool, err error) {
	if r.Inbound == 0 {
		return "", false, nil
	}
	a.mu.Lock()
	st := a.streams[r.Inbound]
	a.mu.Unlock()
	if st == nil {
		return "", false, nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stopped = true // a late delta must not overwrite the answer
	if st.message == "" {
		return "", false, nil
	}
	if err := a.edit(ctx, st.channel, st.message, parts[0]); err != nil {
		if isStatus(err, http.StatusNotFound) {
			// Someone deleted the preview: post the answer in full.
			a.Log.Info().Int64("reply", int64(r.ID)).Msg("discord: streamed message gone; posting the answer")
			id, err := a.post(ctx, r, st.channel, "", parts, 0)
			return id, true, err
		}
		return "", true, fmt.Errorf("discord: deliver reply %d: replace the streamed message: %w", r.ID, err)
	}
	if _, err := a.post(ctx, r, st.channel, "", parts, 1); err != nil {
		return "", true, err
	}
	return st.message, true, nil
}

// edit replaces the content of a message the bot posted; no mention in it
// can ping anyone.
func (a *Adapter) edit(ctx context.Context, channel, message, content string) error {
	_, err := a.sess.ChannelMessageEditComplex(&discordgo.MessageEdit{
		ID: message, Channel: channel, Content: &content, AllowedMentions: noMentions(),
	}, discordgo.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("discord: edit message in %s: %w", channel, err)
	}
	return nil
}
