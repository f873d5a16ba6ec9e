package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
)

// callback is the outer envelope of an Events API event, the same in
// Socket Mode and over HTTP.
type callback struct {
	Type         string          `json:"type"`
	TeamID       string          `json:"team_id"`
	EnterpriseID string          `json:"enterprise_id"`
	EventID      string          `json:"event_id"`
	Challenge    string          `json:"challenge"`
	Event        json.RawMessage `json:"event"`
}

// msgEvent holds the fields of app_mention and message events Talon uses.
type msgEvent struct {
	Type            string    `json:"type"`
	Subtype         string    `json:"subtype"`
	User            string    `json:"user"`
	UserTeam        string    `json:"user_team"` // the sender's own workspace (Slack Connect)
	BotID           string    `json:"bot_id"`
	Text            string    `json:"text"`
	TS              string    `json:"ts"`
	ThreadTS        string    `json:"thread_ts"`
	Channel         string    `json:"channel"`
	ChannelType     string    `json:"channel_type"`
	Message         *innerMsg `json:"message"`
	PreviousMessage *innerMsg `json:"previous_message"`
	DeletedTS       string    `json:"deleted_ts"`
	// Files are attached files (eventFiles reads them).
	Files []json.RawMessage `json:"files"`
}

type innerMsg struct {
	User     string `json:"user"`
	UserTeam string `json:"user_team"`
	BotID    string `json:"bot_id"`
	Subtype  string `json:"subtype"`
	Text     string `json:"text"`
	TS       string `json:"ts"`
	ThreadTS string `json:"thread_ts"`
	// Edited is set on an edited message (message_changed's message).
	Edited *struct {
		TS string `json:"ts"`
	} `json:"edited"`
}

// DedupeKey is the Inbound.DedupeKey of the Slack message (team, channel,
// ts): the same message delivered as app_mention and as message, or retried,
// has one key.
func DedupeKey(team, channel, ts string) string {
	return "slack:" + team + ":" + channel + ":" + ts
}

// replyTo is the decoded Inbound.ReplyTo: where a reply goes. It is
// persisted with the inbound message and its reply.
type replyTo struct {
	Channel string `json:"c"`
	Thread  string `json:"t,omitempty"`
	// Ephemeral, when set, posts the reply visible only to this user (the
	// answer to a slash command).
	Ephemeral string `json:"e,omitempty"`
	// ResponseURL is the slash command's response_url, where the answer
	// reaches the user even where the bot is not a member; it is a bearer
	// capability, never logged. Until is when it stops being valid (Unix
	// seconds).
	ResponseURL string `json:"u,omitempty"`
	Until       int64  `json:"x,omitempty"`
	// Approvals, when set, is the conversation approval prompts go to
	// instead (a routine's owner's DM: the run posts in a channel, where
	// the call's details are not for everyone).
	Approvals string `json:"a,omitempty"`
}

func (r replyTo) encode() string {
	b, _ := json.Marshal(r)
	return string(b)
}

func decodeReplyTo(s string) (replyTo, error) {
	var r replyTo
	if err := json.Unmarshal([]byte(s), &r); err != nil || r.Channel == "" {
		return replyTo{}, errors.New("slack: reply target is not a Slack conversation")
	}
	return r, nil
}

// handleCallback handles one Events API envelope. It returns an error only
// when the event could not be persisted: the caller then does not
// acknowledge it and Slack delivers it again. Events that are malformed,
// unwanted or refused return nil and are acknowledged.
func (a *Adapter) handleCallback(ctx context.Context, raw []byte) error {
	var cb callback
	if err := json.Unmarshal(raw, &cb); err != nil {
		a.Log.Warn().Msg("slack: malformed event envelope dropped")
		return nil
	}
	if cb.Type != "event_callback" {
		return nil
	}
	now := a.now()
	if cb.EventID != "" && a.events.Has(cb.EventID, now) {
		return nil // a retry of an event already accepted
	}
	if err := a.waitReady(ctx); err != nil {
		return fmt.Errorf("slack: bot identity unknown: %w", err)
	}
	if err := a.handleEvent(ctx, cb); err != nil {
		return err
	}
	if cb.EventID != "" {
		a.events.Add(cb.EventID, now)
	}
	return nil
}

func (a *Adapter) handleEvent(ctx context.Context, cb callback) error {
	var ev msgEvent
	if err := json.Unmarshal(cb.Event, &ev); err != nil {
		a.Log.Warn().Str("event_id", cb.EventID).Msg("slack: malformed event dropped")
		return nil
	}
	if !a.pol.teamAllowed(cb.TeamID, cb.EnterpriseID) {
		a.Log.Debug().Str("team_id", cb.TeamID).Msg("slack: event from a workspace not in allowed_teams dropped")
		return nil
	}
	switch ev.Type {
	case "app_mention":
		if a.fromBot(ev.User, ev.BotID, ev.Subtype) {
			return nil
		}
		return a.startTurn(ctx, cb, ev)
	case "message":
	default:
		return nil
	}
	switch ev.Subtype {
	case "", "file_share", "thread_broadcast":
	case "message_changed":
		return a.onEdit(ctx, cb, ev)
	case "message_deleted":
		return a.onDelete(ctx, cb, ev)
	default:
		return nil
	}
	if a.fromBot(ev.User, ev.BotID, ev.Subtype) {
		return nil
	}
	switch {
	case ev.ChannelType == "im" || isDM(ev.Channel):
		return a.startTurn(ctx, cb, ev)
	case a.mentionsBot(ev.Text):
		// The app_mention event for this message has the same dedupe key.
		return a.startTurn(ctx, cb, ev)
	case a.cfg.FollowThreads && ev.ThreadTS != "" && a.follows.Following(ctx, a.followKey(cb, ev.Channel, ev.ThreadTS, ev.UserTeam, ev.User)):
		return a.startTurn(ctx, cb, ev)
	}
	return nil
}

// fromBot is the loop guard: anything a bot posted, and above all this one.
func (a *Adapter) fromBot(user, botID, subtype string) bool {
	return user == "" || botID != "" || subtype == "bot_message" || user == a.botUser || (a.botID != "" && botID == a.botID)
}

func (a *Adapter) mentionsBot(text string) bool {
	return a.botUser != "" && (strings.Contains(text, "<@"+a.botUser+">") || strings.Contains(text, "<@"+a.botUser+"|"))
}

// decode turns Slack's wire text into what the user typed (decodeText),
// naming the users and channels it mentions with lookups bounded by
// namesBudget; the bot's own mention is removed.
func (a *Adapter) decode(ctx context.Context, raw string) string {
	refs := unnamedRefs(raw, a.botUser)
	if len(refs) == 0 {
		return decodeText(raw, a.botUser, nil)
	}
	known := a.names.resolve(ctx, refs)
	return decodeText(raw, a.botUser, func(r ref) string { return known[r].name })
}

// dmWords are the commands a DM with the bot takes as plain words: "new",
// "status" or "help" alone is answered without the model, as /talon new …
// is.
var dmWords = map[string]agent.Command{"new": agent.CommandNew, "status": agent.CommandStatus, "help": agent.CommandHelp}

// dmCommand returns the runtime's form of a plain-word command typed in a
// DM ("/new"), or text unchanged.
func dmCommand(text string) string {
	if c, ok := dmWords[strings.ToLower(strings.TrimSpace(text))]; ok {
		return "/" + string(c)
	}
	return text
}

// secretCommand reports whether text is the runtime's /secret command
// (list, add or rm), typed as a message.
func secretCommand(text string) bool {
	f := strings.Fields(text)
	return len(f) > 0 && strings.EqualFold(f[0], "/secret")
}

func workspaceOf(team, enterprise string) string {
	if enterprise != "" {
		return enterprise
	}
	return team
}

// startTurn accepts a DM, mention or thread follow-up as an Inbound.
func (a *Adapter) startTurn(ctx context.Context, cb callback, ev msgEvent) error {
	dm := ev.ChannelType == "im" || isDM(ev.Channel)
	thread := ev.ThreadTS
	if thread == "" && !dm {
		thread = ev.TS // a top-level mention is answered in a new thread under it
	}
	if reason := a.pol.check(ev.Channel, ev.User); reason != "" {
		a.refuse(cb.TeamID, ev.Channel, thread, ev.User, reason)
		return nil
	}
	switch ext, err := a.external(ctx, ev.UserTeam, cb.TeamID, cb.EnterpriseID, ev.User); {
	case err != nil:
		return err
	case ext:
		a.refuse(ev.UserTeam, ev.Channel, thread, ev.User, reasonExternal)
		return nil
	}
	if ev.TS == "" || ev.Channel == "" {
		return nil
	}
	key := DedupeKey(cb.TeamID, ev.Channel, ev.TS)
	text := a.decode(ctx, ev.Text)
	files := eventFiles(ev.Files)
	if text == "" && len(files) == 0 {
		return nil
	}
	to := replyTo{Channel: ev.Channel, Thread: thread}
	if dm {
		text = dmCommand(text)
	} else if secretCommand(text) {
		// What a user's vault holds is shown to them only, as the answer
		// to /talon secrets is, not to the channel.
		to.Ephemeral = ev.User
	}
	in := agent.Inbound{
		DedupeKey: key,
		Key: agent.SessionKey{
			Principal:    a.principalOf(cb.TeamID, cb.EnterpriseID, ev.UserTeam, ev.User),
			Conversation: agent.Conversation{Channel: ev.Channel, Thread: thread},
		},
		Text:       text,
		Files:      files,
		ReplyTo:    to.encode(),
		ReceivedAt: a.now(),
	}
	_, err := a.Runtime.Accept(ctx, in)
	if err != nil && !errors.Is(err, agent.ErrDuplicate) {
		return fmt.Errorf("slack: accept message: %w", err)
	}
	if !dm && a.cfg.FollowThreads {
		// A mention starts following the thread; a follow-up keeps it
		// followed.
		a.follows.Follow(ctx, a.followKey(cb, ev.Channel, thread, ev.UserTeam, ev.User))
	}
	return nil
}

// reasonExternal is what a Slack Connect guest is told (without
// Config.AllowExternalUsers).
const reasonExternal = "this assistant serves only members of its own workspace."

// errUnverified: whether the sender is a member could not be checked now.
var errUnverified = errors.New("slack: could not check the sender's workspace (users.info); try again")

// external reports whether a sender whose own workspace is userTeam, in an
// event of workspace team (of Enterprise Grid org enterprise, if any), is
// from outside the served workspaces: a Slack Connect guest in a shared
// channel. Config.AllowExternalUsers serves them. A user of another
// workspace of a served Grid org is a member; users.info tells (cached),
// and when it cannot be asked now the answer is errUnverified.
func (a *Adapter) external(ctx context.Context, userTeam, team, enterprise, user string) (bool, error) {
	if a.cfg.AllowExternalUsers || userTeam == "" || userTeam == team || userTeam == enterprise || a.pol.teamAllowed(userTeam, "") {
		return false, nil
	}
	if enterprise == "" || !a.pol.teamAllowed("", enterprise) {
		return true, nil
	}
	r := ref{'U', user}
	p, ok := a.names.resolve(ctx, []ref{r})[r]
	if !ok {
		return false, errUnverified
	}
	return !p.found || p.enterprise != enterprise, nil
}

// refuse tells a user once per process and reason why the bot does not
// answer them.
func (a *Adapter) refuse(team, channel, thread, user, reason string) {
	a.Log.Info().Str("user_id", user).Str("channel_id", channel).Msg("slack: message refused by the access policy")
	if !a.refused.Tell(team+":"+user, reason, channel, a.now()) {
		return
	}
	a.background(func(ctx context.Context) {
		if err := a.ephemeral(ctx, channel, thread, user, "Sorry, "+reason); err != nil {
			a.Log.Warn().Err(err).Str("channel_id", channel).Msg("slack: could not tell a refused user why")
		}
	})
}

// onEdit passes an edit of a message whose turn has not started.
func (a *Adapter) onEdit(ctx context.Context, cb callback, ev msgEvent) error {
	m := ev.Message
	if m == nil || m.TS == "" || a.fromBot(m.User, m.BotID, m.Subtype) {
		return nil
	}
	if ev.PreviousMessage != nil && ev.PreviousMessage.Text == m.Text {
		return nil // an unfurl or other change that is not an edit
	}
	if ext, err := a.external(ctx, m.UserTeam, cb.TeamID, cb.EnterpriseID, m.User); err != nil || ext {
		return err // a guest's message was never accepted
	}
	text := a.decode(ctx, m.Text)
	if ev.ChannelType == "im" || isDM(ev.Channel) {
		text = dmCommand(text)
	}
	am := agent.Amendment{Text: text, Cancel: text == "", Edited: editTime(ev)}
	if _, err := a.Runtime.Amend(ctx, DedupeKey(cb.TeamID, ev.Channel, m.TS), am); err != nil {
		return fmt.Errorf("slack: amend edited message: %w", err)
	}
	return nil
}

// editTime is when the edit ev reports was made: its message's edited.ts,
// else the event's own ts (message_changed's ts is the change's); zero when
// neither parses. The store applies an edit older than one applied before
// to the same message no more (agent.Amendment.Edited).
func editTime(ev msgEvent) time.Time {
	for _, ts := range []string{editedTS(ev.Message), ev.TS} {
		if t, ok := parseTS(ts); ok {
			return time.Unix(t.sec, t.usec*1000)
		}
	}
	return time.Time{}
}

func editedTS(m *innerMsg) string {
	if m == nil || m.Edited == nil {
		return ""
	}
	return m.Edited.TS
}

// onDelete cancels a deleted message whose turn has not started.
func (a *Adapter) onDelete(ctx context.Context, cb callback, ev msgEvent) error {
	ts := ev.DeletedTS
	if ts == "" && ev.PreviousMessage != nil {
		ts = ev.PreviousMessage.TS
	}
	if ts == "" || (ev.PreviousMessage != nil && ev.PreviousMessage.User == a.botUser) {
		return nil
	}
	if _, err := a.Runtime.Amend(ctx, DedupeKey(cb.TeamID, ev.Channel, ts), agent.Amendment{Cancel: true}); err != nil {
		return fmt.Errorf("slack: cancel deleted message: %w", err)
	}
	return nil
}
