package discord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/adapters/internal/chat"
	"github.com/talonhq/talon/agent"
)

// replyTo is where a reply goes: a channel (or thread), the message it
// answers, or the /talon interaction whose deferred answer it completes; or,
// for a mention in a server text channel with Config.Threads, the thread
// to start on that message (its id is the message's id). Encoded compactly
// as "m:<channel>:<message>", "i:<channel>:<interaction>" or
// "t:<channel>:<message>".
type replyTo struct {
	channel     string
	message     string
	interaction string
	// newThread: answer in the thread started on message in channel,
	// creating it on first use.
	newThread bool
	// approvals, when set, is the DM channel where approval prompts go
	// instead of channel: a routine's owner decides there, out of the
	// sight of the channel its run posts in.
	approvals string
}

func (r replyTo) String() string {
	switch {
	case r.interaction != "":
		return "i:" + r.channel + ":" + r.interaction
	case r.newThread:
		return "t:" + r.channel + ":" + r.message
	case r.approvals != "":
		return "m:" + r.channel + ":" + r.message + ":" + r.approvals
	}
	return "m:" + r.channel + ":" + r.message
}

func parseReplyTo(s string) (replyTo, error) {
	parts := strings.Split(s, ":")
	approvals := ""
	if len(parts) == 4 && parts[0] == "m" && isSnowflake(parts[3]) {
		parts, approvals = parts[:3], parts[3]
	}
	if len(parts) != 3 || !isSnowflake(parts[1]) || (parts[2] != "" && !isSnowflake(parts[2])) {
		return replyTo{}, fmt.Errorf("discord: reply target %q: want m:<channel>:<message>[:<approvals DM>], t:<channel>:<message> or i:<channel>:<interaction>", s)
	}
	switch parts[0] {
	case "m":
		return replyTo{channel: parts[1], message: parts[2], approvals: approvals}, nil
	case "i":
		return replyTo{channel: parts[1], interaction: parts[2]}, nil
	case "t":
		if parts[2] == "" {
			return replyTo{}, fmt.Errorf("discord: reply target %q: a thread needs its starting message", s)
		}
		return replyTo{channel: parts[1], message: parts[2], newThread: true}, nil
	}
	return replyTo{}, fmt.Errorf("discord: reply target %q: unknown kind", s)
}

// noMentions lets a message ping nobody: no @everyone/@here, no roles, no
// users, not even the author of the message replied to.
func noMentions() *discordgo.MessageAllowedMentions {
	return &discordgo.MessageAllowedMentions{Parse: []discordgo.AllowedMentionType{}}
}

// messageSend is the create-message body. discordgo v0.29's MessageSend
// has no nonce, so the adapter sends its own.
type messageSend struct {
	Content         string                            `json:"content,omitempty"`
	Components      []discordgo.MessageComponent      `json:"components,omitempty"`
	AllowedMentions *discordgo.MessageAllowedMentions `json:"allowed_mentions"`
	Reference       *discordgo.MessageReference       `json:"message_reference,omitempty"`
	// Nonce with EnforceNonce makes Discord return the message already
	// created with this nonce (within a few minutes) instead of posting it
	// again, so a retried send does not double-post.
	Nonce        string `json:"nonce,omitempty"`
	EnforceNonce bool   `json:"enforce_nonce,omitempty"`
	// Flags carries SUPPRESS_EMBEDS for a message with a link to a host
	// that is not trusted (see Adapter.embeds).
	Flags discordgo.MessageFlags `json:"flags,omitempty"`
}

type outgoing struct {
	content    string
	components []discordgo.MessageComponent
	replyTo    string // message id to reply to, or ""
	nonce      string // ≤ 25 characters
}

// send posts one message. Rate-limit buckets and 429s are handled by
// discordgo (it waits retry_after and retries the same request, nonce
// included, so a 429 ends in exactly one message) unless opts say
// otherwise.
func (a *Adapter) send(ctx context.Context, channel string, o outgoing, opts ...discordgo.RequestOption) (*discordgo.Message, error) {
	body := messageSend{
		Content:         o.content,
		Components:      o.components,
		AllowedMentions: noMentions(),
		Nonce:           o.nonce,
		EnforceNonce:    o.nonce != "",
		Flags:           a.embeds(o.content),
	}
	if o.replyTo != "" {
		f := false
		body.Reference = &discordgo.MessageReference{MessageID: o.replyTo, ChannelID: channel, FailIfNotExists: &f}
	}
	endpoint := discordgo.EndpointChannelMessages(channel)
	raw, err := a.sess.RequestWithBucketID("POST", endpoint, body, endpoint, append([]discordgo.RequestOption{discordgo.WithContext(ctx)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("discord: post message in %s: %w", channel, err)
	}
	var m discordgo.Message
	if err := discordgo.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("discord: post message in %s: decode: %w", channel, err)
	}
	return &m, nil
}

// embeds is the flags of a message with content: SUPPRESS_EMBEDS unless
// every link in it is to a trusted host (chat.Unfurl), so that Discord's
// servers fetch no URL a prompt injection put the conversation in.
func (a *Adapter) embeds(content string) discordgo.MessageFlags {
	if chat.Unfurl(content, a.cfg.TrustedLinks) {
		return 0
	}
	return discordgo.MessageFlagsSuppressEmbeds
}

// nonce derives a send's nonce from what it delivers and its part index,
// so that a retry (or a redelivery after a crash) reuses it.
func nonce(kind string, id int64, part int) string {
	return kind + strconv.FormatInt(id, 36) + "." + strconv.Itoa(part)
}

// Deliver posts r, split into messages of at most Config.MaxMessageChars,
// with code fences balanced and no mention able to ping anyone. A reply to
// a /talon command completes its deferred (ephemeral) answer while the
// interaction token is valid, and goes to the user's DM after that. An answer that was streamed (StreamEdits)
// replaces the streamed message, further parts following as new messages.
// It returns the id of the first message.
//
// Each part is recorded (r.Record) as soon as it is posted, and the parts
// r.Posted lists are not posted again, so a delivery cut short by a
// failure or a crash continues with the first part not recorded; the
// message that previewed a streamed answer (r.Posted, or in memory) is
// edited into the first part. Every posted part also carries a nonce
// derived from r.ID and its number that Discord enforces: a part posted
// but not recorded (the process died in between) is not posted again if
// the retry comes within Discord's nonce window (a few minutes).
func (a *Adapter) Deliver(ctx context.Context, r agent.Reply) (string, error) {
	if _, err := a.ready(ctx); err != nil {
		return "", err
	}
	to, err := parseReplyTo(r.ReplyTo)
	if err != nil {
		if r.Key.Conversation.Channel == "" {
			return "", err
		}
		to = replyTo{channel: r.Key.Conversation.Channel}
	}
	text, files := r.Text, []chat.File(nil)
	if to.interaction == "" {
		// An interaction's answer is split whole: its follow-ups are
		// ephemeral, and a file there would outlive the answer.
		var cut []chat.File
		text, cut = chat.Outsized(r.Text, a.cfg.MaxMessageChars, chat.Runes, chat.MaxParts, fileprefix(r.ID))
		files = chat.WithReplyFiles(cut, r.Files)
	}
	parts := splitMessage(text, a.cfg.MaxMessageChars)
	if len(parts) == 0 {
		parts = []string{"(empty reply)"}
	}
	if to.interaction != "" {
		if tok, ok := a.interactionToken(to.interaction); ok {
			id, err := a.deliverInteraction(ctx, r, tok, parts)
			if err == nil {
				a.forgetInteraction(to.interaction)
				return id, nil
			}
			a.Log.Warn().Err(err).Int64("reply", int64(r.ID)).Msg("discord: interaction follow-up failed; answering in a DM")
			r.Posted = nil // the follow-ups were private: the DM gets every part
		}
		// The answer is private (ephemeral): without its interaction (the
		// token expired, or Talon restarted since), it goes to the user's
		// DM with the bot, never into a server channel.
		dm, err := a.sess.UserChannelCreate(r.Key.Principal.User, discordgo.WithContext(ctx))
		if err != nil {
			return "", fmt.Errorf("discord: deliver reply %d: open a DM for a /talon answer: %w", r.ID, err)
		}
		to = replyTo{channel: dm.ID}
	}
	posted := map[int]string{} // part → message id, of the parts posted
	preview := ""              // the message that showed the answer while it streamed
	for _, p := range r.Posted {
		if p.Preview {
			preview = p.PlatformID
		} else {
			posted[p.N] = p.PlatformID
		}
	}
	channel, ref := "", ""
	if st, ok := a.streams.Finish(r.Inbound); ok {
		st.mu.Lock()
		st.stopped = true // a late delta must not overwrite the answer
		if st.message != "" && (preview == "" || preview == st.message) {
			preview, channel = st.message, st.channel
		}
		st.mu.Unlock()
	}
	if channel == "" {
		channel, ref = a.target(ctx, to)
	}
	if _, ok := posted[0]; !ok && preview != "" {
		switch err := a.edit(ctx, channel, preview, parts[0]); {
		case err == nil:
			posted[0] = preview
			record(ctx, r, 0, preview)
		case isStatus(err, http.StatusNotFound):
			// Someone deleted the preview: post the answer in full.
			a.Log.Info().Int64("reply", int64(r.ID)).Msg("discord: streamed message gone; posting the answer")
		default:
			return "", fmt.Errorf("discord: deliver reply %d: replace the streamed message: %w", r.ID, err)
		}
	}
	for i := range parts {
		if _, ok := posted[i]; ok {
			continue
		}
		o := outgoing{content: parts[i], nonce: nonce("r", int64(r.ID), i)}
		if i == 0 {
			o.replyTo = ref
		}
		m, err := a.send(ctx, channel, o)
		if err != nil {
			return "", fmt.Errorf("discord: deliver reply %d part %d/%d: %w", r.ID, i+1, len(parts), err)
		}
		posted[i] = m.ID
		record(ctx, r, i, m.ID)
	}
	for k, f := range files {
		n := len(parts) + k
		if _, ok := posted[n]; ok {
			continue
		}
		m, err := a.sendFile(ctx, channel, f, nonce("r", int64(r.ID), n))
		if err != nil {
			return "", fmt.Errorf("discord: deliver reply %d file %d/%d: %w", r.ID, k+1, len(files), err)
		}
		posted[n] = m.ID
		record(ctx, r, n, m.ID)
	}
	a.streams.Drop(r.Inbound)
	return posted[0], nil
}

// contentType is the type a file is sent with: a tool's own, text for a
// block cut from the reply.
func contentType(f chat.File) string {
	if f.MediaType != "" {
		return f.MediaType
	}
	return "text/plain; charset=utf-8"
}

// fileprefix names the files of reply id: talon-r<id>-1.go, …
func fileprefix(id agent.ReplyID) string {
	return "talon-r" + strconv.FormatInt(int64(id), 10)
}

// sendFile posts f as the attachment of a message without text (a
// multipart create-message request, the JSON body in payload_json), with
// the nonce Discord enforces: a retry after a crash, within the nonce
// window, returns the message already posted instead of a second one.
// Embeds are suppressed when the file names a host that is not trusted,
// as for text (Discord does not embed a text file's links, so this only
// keeps to the rule).
func (a *Adapter) sendFile(ctx context.Context, channel string, f chat.File, nonce string) (*discordgo.Message, error) {
	body := messageSend{AllowedMentions: noMentions(), Nonce: nonce, EnforceNonce: true, Flags: a.embeds(string(f.Content))}
	ctype, payload, err := discordgo.MultipartBodyWithJSON(body, []*discordgo.File{{
		Name: f.Name, ContentType: contentType(f), Reader: bytes.NewReader(f.Content),
	}})
	if err != nil {
		return nil, fmt.Errorf("discord: attach %s: %w", f.Name, err)
	}
	endpoint := discordgo.EndpointChannelMessages(channel)
	raw, err := a.sess.RequestRaw("POST", endpoint, ctype, payload, endpoint, 0, discordgo.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("discord: post file %s in %s: %w", f.Name, channel, err)
	}
	var m discordgo.Message
	if err := discordgo.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("discord: post file %s in %s: decode: %w", f.Name, channel, err)
	}
	return &m, nil
}

// record tells the runtime that part n of r is posted as message id.
func record(ctx context.Context, r agent.Reply, n int, id string) {
	if r.Record != nil {
		r.Record(ctx, agent.PostedPart{N: n, PlatformID: id})
	}
}

// deliverInteraction edits the deferred answer with the first part and
// sends the rest as ephemeral follow-ups, skipping the parts r.Posted
// lists and recording the others. A follow-up carries no nonce: one posted
// just before a crash, and not recorded, is shown again.
func (a *Adapter) deliverInteraction(ctx context.Context, r agent.Reply, tok interactionToken, parts []string) (string, error) {
	i := &discordgo.Interaction{AppID: tok.appID, Token: tok.token}
	first := ""
	if p, ok := r.PostedPart(0); ok {
		first = p.PlatformID
	}
	for n, p := range parts {
		if _, ok := r.PostedPart(n); ok {
			continue
		}
		content := p
		if n == 0 {
			m, err := a.isess.InteractionResponseEdit(i, &discordgo.WebhookEdit{Content: &content, AllowedMentions: noMentions()}, discordgo.WithContext(ctx))
			if err != nil {
				err = hideToken(err, tok.token)
				return "", fmt.Errorf("discord: edit deferred answer: %w", err)
			}
			if m != nil {
				first = m.ID
			}
			record(ctx, r, 0, first)
			continue
		}
		m, err := a.isess.FollowupMessageCreate(i, true, &discordgo.WebhookParams{
			Content: content, AllowedMentions: noMentions(), Flags: discordgo.MessageFlagsEphemeral | a.embeds(content),
		}, discordgo.WithContext(ctx))
		if err != nil {
			return first, fmt.Errorf("discord: follow-up %d: %w", n, hideToken(err, tok.token))
		}
		id := ""
		if m != nil {
			id = m.ID
		}
		record(ctx, r, n, id)
	}
	return first, nil
}

// NoticePrivately implements agent.Noticer: n.Text is shown to key's user
// only. In a conversation started by a /talon command it is an ephemeral
// follow-up of that command. Otherwise (a plain message, or a command's
// token that expired) a bot's message in the conversation would be seen by
// everyone there, so n.Text goes to the user's DM with the bot, and the
// conversation, unless it is that DM, is told only n.Public.
func (a *Adapter) NoticePrivately(ctx context.Context, key agent.SessionKey, replyTo string, n agent.Notice) error {
	to, err := parseReplyTo(replyTo)
	if err != nil {
		return err
	}
	if tok, ok := a.interactionToken(to.interaction); to.interaction != "" && ok {
		i := &discordgo.Interaction{AppID: tok.appID, Token: tok.token}
		_, err = a.isess.FollowupMessageCreate(i, true, &discordgo.WebhookParams{
			Content: n.Text, AllowedMentions: noMentions(), Flags: discordgo.MessageFlagsEphemeral | discordgo.MessageFlagsSuppressEmbeds,
		}, discordgo.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("discord: private follow-up: %w", hideToken(err, tok.token))
		}
		return nil
	}
	if _, err := a.ready(ctx); err != nil {
		return err
	}
	dm, err := a.sess.UserChannelCreate(key.Principal.User, discordgo.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("discord: open a DM for a private message: %w", err)
	}
	// Sent as is, with no embed: the text may hold a one-time link that
	// no preview may fetch.
	if _, err := a.sendPrivate(ctx, dm.ID, n.Text); err != nil {
		return fmt.Errorf("discord: private message by DM: %w", err)
	}
	if n.Public == "" || to.channel == "" || to.channel == dm.ID {
		return nil
	}
	channel, ref := a.target(ctx, to)
	if _, err := a.send(ctx, channel, outgoing{content: n.Public, replyTo: ref}); err != nil {
		a.Log.Warn().Err(err).Msg("discord: the note that a private message was sent by DM was not posted")
	}
	return nil
}

// sendPrivate posts text in a DM channel with embeds suppressed whatever
// its links.
func (a *Adapter) sendPrivate(ctx context.Context, channel, text string) (*discordgo.Message, error) {
	body := messageSend{Content: text, AllowedMentions: noMentions(), Flags: discordgo.MessageFlagsSuppressEmbeds}
	endpoint := discordgo.EndpointChannelMessages(channel)
	raw, err := a.sess.RequestWithBucketID("POST", endpoint, body, endpoint, discordgo.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	var m discordgo.Message
	if err := discordgo.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	return &m, nil
}

func (a *Adapter) interactionToken(id string) (interactionToken, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	t, ok := a.interactions[id]
	if ok && a.Now().After(t.expires) {
		delete(a.interactions, id)
		return interactionToken{}, false
	}
	return t, ok
}

func (a *Adapter) forgetInteraction(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.interactions, id)
}

// Working shows the typing indicator in key's conversation, refreshed every
// Config.TypingInterval (it lasts 10 s), until stop is called. stop waits
// for the refreshing goroutine to end.
func (a *Adapter) Working(ctx context.Context, key agent.SessionKey, replyToStr string) (stop func()) {
	to := replyTo{channel: key.Conversation.Channel}
	if t, err := parseReplyTo(replyToStr); err == nil {
		if t.interaction != "" {
			// A deferred interaction already shows "is thinking…".
			return func() {}
		}
		to = t
	}
	if _, err := a.ready(ctx); err != nil || to.channel == "" {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A new thread is started here, at the turn's start, so that the
		// indicator shows where the answer will be.
		channel, _ := a.target(ctx, to)
		for {
			if err := a.sess.ChannelTyping(channel, discordgo.WithContext(ctx)); err != nil && !errors.Is(ctx.Err(), context.Canceled) {
				a.Log.Debug().Err(err).Str("channel_id", channel).Msg("discord: typing indicator")
			}
			if !agent.Sleep(ctx, a.cfg.TypingInterval) {
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
