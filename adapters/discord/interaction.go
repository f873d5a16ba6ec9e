package discord

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/bwmarrin/discordgo"

	"github.com/talonhq/talon/adapters/internal/chat"
	"github.com/talonhq/talon/agent"
)

// Custom ids of the adapter's components. Every one is well under
// Discord's 100-character limit.
const (
	approvePrefix = "talon:approve:"
	denyPrefix    = "talon:deny:"
	secretModalID = "talon:secret-add"
)

// interactionTTL is how long an interaction token may be used for
// follow-ups (Discord allows 15 minutes).
const interactionTTL = 14 * time.Minute

// onInteraction answers i on a path of its own: a goroutine per
// interaction (at most maxInteractions at once), whose first REST call is
// the answer Discord wants within 3 s (deferred, a modal, or the final
// answer when it needs no waiting). Nothing else the adapter does (refusal
// notices, backfill, command registration, replies held by a rate limit)
// queues in front of it.
func (a *Adapter) onInteraction(i *discordgo.Interaction) {
	select {
	case a.interactionSlots <- struct{}{}:
	default:
		a.Log.Warn().Str("interaction", i.ID).Int("limit", maxInteractions).Msg("discord: too many interactions at once; this one is not answered")
		return
	}
	a.goBG(func() {
		defer func() { <-a.interactionSlots }()
		a.handleInteraction(a.runCtx, i)
	})
}

func (a *Adapter) handleInteraction(ctx context.Context, i *discordgo.Interaction) {
	switch d := i.Data.(type) {
	case discordgo.MessageComponentInteractionData:
		a.handleButton(ctx, i, d)
	case discordgo.ApplicationCommandInteractionData:
		a.handleCommand(ctx, i, d)
	case discordgo.ModalSubmitInteractionData:
		a.handleModal(ctx, i, d)
	}
}

// who returns the principal and policy place of an interaction's user:
// i.Member.User in guilds, i.User in DMs.
func (a *Adapter) who(i *discordgo.Interaction) (agent.Principal, place, bool) {
	var user string
	var roles []string
	switch {
	case i.Member != nil && i.Member.User != nil:
		user, roles = i.Member.User.ID, i.Member.Roles
	case i.User != nil:
		user = i.User.ID
	default:
		return agent.Principal{}, place{}, false
	}
	_, parent := a.threadOf(i.ChannelID)
	return principal(user),
		place{guild: i.GuildID, channel: i.ChannelID, parent: parent, user: user, roles: roles}, true
}

func (a *Adapter) respond(ctx context.Context, i *discordgo.Interaction, r *discordgo.InteractionResponse) {
	if err := a.isess.InteractionRespond(i, r, discordgo.WithContext(ctx)); err != nil {
		a.Log.Warn().Err(hideToken(err, i.Token)).Str("interaction", i.ID).Msg("discord: answer interaction")
	}
}

// hideToken keeps an interaction's token out of err's text: the REST
// calls that answer an interaction carry it in their URL, which a failed
// request's error (a *url.Error, a RateLimitError) repeats, and anyone
// holding it can answer as the bot for 15 minutes. errors.As still finds
// what err wraps.
func hideToken(err error, token string) error {
	if err == nil || token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return tokenHidden{err: err, token: token}
}

type tokenHidden struct {
	err   error
	token string
}

func (e tokenHidden) Error() string { return strings.ReplaceAll(e.err.Error(), e.token, "<token>") }
func (e tokenHidden) Unwrap() error { return e.err }

// ephemeral is an answer only the clicking user sees.
func ephemeral(text string) *discordgo.InteractionResponse {
	return &discordgo.InteractionResponse{
		Type: discordgo.InteractionResponseChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Content: text, Flags: discordgo.MessageFlagsEphemeral, AllowedMentions: noMentions()},
	}
}

// --- approvals ---

// approvalMarkup is how Discord writes an approval prompt: Markdown,
// within a message's 2,000 characters (counted as UTF-16, the stricter
// reading). Mentions do not ping: every message is sent with
// allowed_mentions empty.
var approvalMarkup = chat.Markup{
	Bold: func(s string) string { return "**" + s + "**" },
	Mention: func(user string) string {
		if !isSnowflake(user) {
			return ""
		}
		return "<@" + user + ">"
	},
	Time:  func(t time.Time) string { return fmt.Sprintf("<t:%d:R>", t.Unix()) },
	Len:   utf16Len,
	Limit: 1900,
}

func utf16Len(s string) int {
	n := 0
	for _, c := range s {
		n += utf16.RuneLen(c)
	}
	return n
}

// String is the message's reference as agent.ApprovalPrompt.Message
// keeps it: "channel/message".
func (r msgRef) String() string { return r.channel + "/" + r.message }

func parseMsgRef(s string) (msgRef, bool) {
	channel, message, ok := strings.Cut(s, "/")
	if !ok || !isSnowflake(channel) || !isSnowflake(message) {
		return msgRef{}, false
	}
	return msgRef{channel: channel, message: message}, true
}

// AskApproval posts the prompt with Approve and Deny buttons in the
// conversation of p (a routine's run: in its owner's DM with the bot) and
// returns the message. Only the session's owner can
// decide (Runtime.Decide checks the clicker); anyone else is told so
// privately. A prompt posted before (p.Message, by a process since
// restarted) is shown again in that message, with live buttons; a new
// one is posted only when that message is gone.
func (a *Adapter) AskApproval(ctx context.Context, p agent.ApprovalPrompt) (string, error) {
	if _, err := a.ready(ctx); err != nil {
		return "", err
	}
	text := chat.PromptOf(p).Ask(approvalMarkup)
	comps := approvalButtons(p.ID, false)
	repost := 0
	if ref, ok := parseMsgRef(p.Message); ok {
		_, err := a.sess.ChannelMessageEditComplex(&discordgo.MessageEdit{
			ID: ref.message, Channel: ref.channel, Content: &text, Components: &comps, AllowedMentions: noMentions(),
			Flags: a.embeds(text),
		}, discordgo.WithContext(ctx))
		if err == nil {
			return p.Message, nil
		}
		if !messageGone(err) {
			// The message is still there with its buttons, which still
			// decide: showing it again failed, asking did not.
			a.Log.Warn().Err(err).Int64("approval", int64(p.ID)).Str("channel_id", ref.channel).Msg("discord: could not refresh the approval prompt; its buttons still work")
			return p.Message, nil
		}
		a.Log.Info().Int64("approval", int64(p.ID)).Str("channel_id", ref.channel).Msg("discord: the approval prompt's message is gone; posting it again")
		repost = 1 // another nonce: Discord would answer the first with the deleted message
	}
	channel, reply := p.Key.Conversation.Channel, ""
	if to, err := parseReplyTo(p.ReplyTo); err == nil && to.approvals != "" {
		channel = to.approvals // a routine's owner, in their DM
	} else if err == nil {
		channel, reply = a.target(ctx, to)
	}
	m, err := a.send(ctx, channel, outgoing{
		content:    text,
		components: comps,
		replyTo:    reply,
		nonce:      nonce("a", int64(p.ID), repost),
	})
	if err != nil {
		return "", fmt.Errorf("discord: ask approval %d: %w", p.ID, err)
	}
	return msgRef{channel: channel, message: m.ID}.String(), nil
}

// messageGone reports whether err says a message (or its channel) no
// longer exists.
func messageGone(err error) bool {
	var re *discordgo.RESTError
	if !errors.As(err, &re) {
		return false
	}
	if re.Message != nil && (re.Message.Code == discordgo.ErrCodeUnknownMessage || re.Message.Code == discordgo.ErrCodeUnknownChannel) {
		return true
	}
	return re.Response != nil && re.Response.StatusCode == http.StatusNotFound
}

// clickKey carries, in the context of Runtime.Decide for a button click,
// where ApprovalDone leaves the outcome for the click's answer, which
// updates the clicked message (an interaction answer of type 7) instead
// of a separate edit.
type clickKey struct{}

type clickOutcome struct {
	id      agent.ApprovalID
	message msgRef // the clicked message
	text    string // set by ApprovalDone when it leaves the update to the click
}

// ApprovalDone replaces the prompt's buttons with disabled ones and the
// outcome: in the answer to the click that decided it, or by editing the
// prompt's message. A prompt whose message is unknown gets the outcome as
// a new message.
func (a *Adapter) ApprovalDone(ctx context.Context, p agent.ApprovalPrompt, state agent.ApprovalState, by agent.Principal) error {
	if _, err := a.ready(ctx); err != nil {
		return err
	}
	text := chat.PromptOf(p).Done(approvalMarkup, state, by.User)
	ref, ok := parseMsgRef(p.Message)
	if click, _ := ctx.Value(clickKey{}).(*clickOutcome); click != nil && click.id == p.ID && (!ok || click.message == ref) {
		click.text = text
		return nil
	}
	if ok {
		comps := approvalButtons(p.ID, true)
		_, err := a.sess.ChannelMessageEditComplex(&discordgo.MessageEdit{
			ID: ref.message, Channel: ref.channel, Content: &text, Components: &comps, AllowedMentions: noMentions(),
			Flags: a.embeds(text),
		}, discordgo.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("discord: show approval %d outcome: %w", p.ID, err)
		}
		return nil
	}
	channel := p.Key.Conversation.Channel
	if to, err := parseReplyTo(p.ReplyTo); err == nil && to.approvals != "" {
		channel = to.approvals
	} else if err == nil {
		channel, _ = a.target(ctx, to)
	}
	if _, err := a.send(ctx, channel, outgoing{content: text, nonce: nonce("d", int64(p.ID), 0)}); err != nil {
		return fmt.Errorf("discord: post approval %d outcome: %w", p.ID, err)
	}
	return nil
}

func approvalButtons(id agent.ApprovalID, disabled bool) []discordgo.MessageComponent {
	sid := strconv.FormatInt(int64(id), 10)
	return []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
		discordgo.Button{Label: "Approve", Style: discordgo.SuccessButton, CustomID: approvePrefix + sid, Disabled: disabled},
		discordgo.Button{Label: "Deny", Style: discordgo.DangerButton, CustomID: denyPrefix + sid, Disabled: disabled},
	}}}
}

// handleButton decides an approval for its clicker and answers within
// Discord's 3 s: the prompt is updated in place (type 7) on success, and
// refusals are private (type 4, ephemeral).
func (a *Adapter) handleButton(ctx context.Context, i *discordgo.Interaction, d discordgo.MessageComponentInteractionData) {
	approve := strings.HasPrefix(d.CustomID, approvePrefix)
	rest, ok := strings.CutPrefix(d.CustomID, approvePrefix)
	if !ok {
		if rest, ok = strings.CutPrefix(d.CustomID, denyPrefix); !ok {
			// Unanswered, Discord would tell the person "This
			// interaction failed".
			a.respond(ctx, i, ephemeral("This button is not one of mine."))
			return
		}
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || n <= 0 {
		a.respond(ctx, i, ephemeral("This button is not one of mine."))
		return
	}
	id := agent.ApprovalID(n)
	by, _, ok := a.who(i)
	if !ok {
		return
	}
	log := a.Log.With().Int64("approval", n).Str("user", by.User).Logger()
	click := &clickOutcome{id: id}
	if i.Message != nil {
		click.message = msgRef{channel: i.ChannelID, message: i.Message.ID}
	}
	state, err := a.Runtime.Decide(context.WithValue(ctx, clickKey{}, click), id, by, approve)
	switch {
	case err == nil:
		log.Info().Str("state", string(state)).Msg("discord: approval decided")
		content := click.text
		if content == "" {
			content = chat.Outcome(approvalMarkup, state, by.User)
			if i.Message != nil && i.Message.Content != "" {
				content = i.Message.Content + "\n" + content
			}
		}
		a.respond(ctx, i, &discordgo.InteractionResponse{
			Type: discordgo.InteractionResponseUpdateMessage,
			Data: &discordgo.InteractionResponseData{Content: content, Components: approvalButtons(id, true), AllowedMentions: noMentions()},
		})
	case errors.Is(err, agent.ErrNotOwner):
		log.Info().Msg("discord: approval click by someone other than the owner refused")
		a.respond(ctx, i, ephemeral("Only the person who started this conversation can decide this."))
	case errors.Is(err, agent.ErrDecided):
		a.respond(ctx, i, ephemeral("This was already decided ("+string(state)+")."))
	case errors.Is(err, agent.ErrUnknownApproval):
		a.respond(ctx, i, ephemeral("I no longer know this approval."))
	default:
		ref := agent.NewRef()
		log.Error().Err(err).Str("ref", ref).Msg("discord: decide approval")
		a.respond(ctx, i, ephemeral("Something went wrong recording your answer (ref "+ref+")."))
	}
}

// --- the /talon command ---

// subcommand is one /talon subcommand. The table below is the one source
// of the command registered with Discord (talonCommand), of what each
// subcommand does (handleCommand) and of how the runtime's help and hints
// name the commands (CommandHint), so that they cannot drift apart.
type subcommand struct {
	name        string
	description string
	cmd         agent.Command
	// text is the runtime command it runs ("/new"); "" for one the
	// adapter answers itself.
	text string
	// arg, when set, is the string option (required) whose value follows
	// text.
	arg, argDescription string
	// modal opens the secret form instead (secret-add).
	modal bool
}

var subcommands = []subcommand{
	{name: "help", description: "Show what Talon can do", cmd: agent.CommandHelp, text: "/help"},
	{name: "new", description: "Start a fresh conversation here", cmd: agent.CommandNew, text: "/new"},
	{name: "status", description: "Show this conversation's session and queue", cmd: agent.CommandStatus, text: "/status"},
	{name: "tools", description: "List the tools you may use", cmd: agent.CommandTools, text: "/tools"},
	{name: "usage", description: "Show the tokens you used and your budgets", cmd: agent.CommandUsage, text: "/usage"},
	{name: "secrets", description: "List your stored secrets (names only)", cmd: agent.CommandSecrets, text: "/secret"},
	{name: "secret-add", description: "Store a secret in your vault through a private form", cmd: agent.CommandSecretAdd, modal: true},
	{name: "secret-rm", description: "Remove a secret from your vault", cmd: agent.CommandSecretRemove, text: "/secret rm",
		arg: "name", argDescription: "The name of the secret to remove"},
	{name: "memory", description: "List what Talon remembers for you and in this channel", cmd: agent.CommandMemory, text: "/memory"},
	{name: "memory-rm", description: "Make Talon forget an entry of your memory", cmd: agent.CommandMemoryRemove, text: "/memory rm",
		arg: "id", argDescription: "The entry's number, as /talon memory shows it"},
	{name: "connections", description: "List the accounts you connected", cmd: agent.CommandConnections, text: "/connections"},
	{name: "connect", description: "Connect your own account of a server (a private sign-in link)", cmd: agent.CommandConnect, text: "/connect",
		arg: "name", argDescription: "The server to connect"},
	{name: "disconnect", description: "Revoke and forget your connection to a server", cmd: agent.CommandDisconnect, text: "/disconnect",
		arg: "name", argDescription: "The server to disconnect"},
}

// lookupSubcommand returns the subcommand named name.
func lookupSubcommand(name string) (subcommand, bool) {
	for _, sc := range subcommands {
		if sc.name == name {
			return sc, true
		}
	}
	return subcommand{}, false
}

// CommandHint implements agent.CommandSyntax: Discord users type the
// runtime's commands as /talon subcommands ("/talon secret-add").
func (a *Adapter) CommandHint(cmd agent.Command) string {
	for _, sc := range subcommands {
		if sc.cmd == cmd {
			h := "/talon " + sc.name
			if sc.arg != "" {
				h += " " + sc.arg + ":" + strings.ToUpper(sc.arg)
			}
			return h
		}
	}
	return ""
}

// talonCommand is the /talon application command.
func talonCommand() *discordgo.ApplicationCommand {
	c := &discordgo.ApplicationCommand{
		Type:        discordgo.ChatApplicationCommand,
		Name:        "talon",
		Description: "Talk to the Talon agent gateway",
	}
	for _, sc := range subcommands {
		o := &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionSubCommand, Name: sc.name, Description: sc.description}
		if sc.arg != "" {
			o.Options = []*discordgo.ApplicationCommandOption{{
				Type: discordgo.ApplicationCommandOptionString, Name: sc.arg, Description: sc.argDescription, Required: true,
			}}
		}
		c.Options = append(c.Options, o)
	}
	return c
}

// commandSignature is what decides whether registered commands differ:
// every field the adapter sets, options included.
func commandSignature(cmds []*discordgo.ApplicationCommand) string {
	var b strings.Builder
	var opts func([]*discordgo.ApplicationCommandOption)
	opts = func(list []*discordgo.ApplicationCommandOption) {
		b.WriteString("[")
		for _, o := range list {
			fmt.Fprintf(&b, "%d/%q/%q/%t", o.Type, o.Name, o.Description, o.Required)
			if len(o.Options) > 0 {
				opts(o.Options)
			}
			b.WriteString(";")
		}
		b.WriteString("]")
	}
	for _, c := range cmds {
		t := c.Type
		if t == 0 {
			t = discordgo.ChatApplicationCommand
		}
		fmt.Fprintf(&b, "%d/%q/%q", t, c.Name, c.Description)
		opts(c.Options)
	}
	return b.String()
}

// registerCommands overwrites the application's global commands with
// /talon, only when what Discord has differs (creates are rate limited).
func (a *Adapter) registerCommands(ctx context.Context) {
	a.mu.Lock()
	app := a.appID
	a.mu.Unlock()
	if app == "" {
		var err error
		if app, err = a.ApplicationID(ctx); err != nil {
			a.Log.Warn().Err(err).Msg("discord: no application id; /talon not registered")
			return
		}
	}
	want := []*discordgo.ApplicationCommand{talonCommand()}
	have, err := a.sess.ApplicationCommands(app, "", discordgo.WithContext(ctx))
	if err != nil {
		a.Log.Warn().Err(err).Msg("discord: list application commands")
		return
	}
	if commandSignature(have) == commandSignature(want) {
		a.Log.Debug().Msg("discord: /talon already registered")
		return
	}
	if _, err := a.sess.ApplicationCommandBulkOverwrite(app, "", want, discordgo.WithContext(ctx)); err != nil {
		a.Log.Warn().Err(err).Msg("discord: register /talon")
		return
	}
	a.Log.Info().Msg("discord: registered /talon")
}

func (a *Adapter) handleCommand(ctx context.Context, i *discordgo.Interaction, d discordgo.ApplicationCommandInteractionData) {
	if d.Name != "talon" || len(d.Options) == 0 {
		a.respond(ctx, i, ephemeral("I do not know this command."))
		return
	}
	sc, known := lookupSubcommand(d.Options[0].Name)
	if !known {
		a.respond(ctx, i, ephemeral("I do not know this command."))
		return
	}
	p, pl, ok := a.who(i)
	if !ok {
		return
	}
	log := a.Log.With().Str("interaction", i.ID).Str("user", p.User).Str("command", sc.name).Logger()
	if reason := a.cfg.refusal(pl); reason != "" {
		log.Info().Str("reason", reason).Msg("discord: command refused by the access policy")
		a.respond(ctx, i, ephemeral("Sorry, "+reason))
		return
	}
	if sc.modal {
		if a.Secrets == nil {
			a.respond(ctx, i, ephemeral("The vault is not configured on this Talon gateway, so secrets cannot be stored."))
			return
		}
		a.respond(ctx, i, secretModal())
		return
	}
	text := sc.text
	if sc.arg != "" {
		v := optionValue(d.Options[0].Options, sc.arg)
		if v == "" {
			a.respond(ctx, i, ephemeral("Usage: "+a.CommandHint(sc.cmd)))
			return
		}
		text += " " + v
	}
	// Acknowledge first (Discord allows 3 s; the answer comes from the
	// runtime), so the deferred answer exists before Deliver edits it.
	if err := a.isess.InteractionRespond(i, &discordgo.InteractionResponse{
		Type: discordgo.InteractionResponseDeferredChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Flags: discordgo.MessageFlagsEphemeral},
	}, discordgo.WithContext(ctx)); err != nil {
		log.Warn().Err(hideToken(err, i.Token)).Msg("discord: defer command answer")
		return
	}
	a.mu.Lock()
	now := a.Now()
	for id, tok := range a.interactions {
		if now.After(tok.expires) {
			delete(a.interactions, id)
		}
	}
	a.interactions[i.ID] = interactionToken{appID: i.AppID, token: i.Token, expires: now.Add(interactionTTL)}
	a.mu.Unlock()
	_, err := a.Runtime.Accept(ctx, agent.Inbound{
		DedupeKey:  "discord:i:" + i.ID,
		Key:        agent.SessionKey{Principal: p, Conversation: agent.Conversation{Channel: i.ChannelID}},
		Text:       text,
		ReplyTo:    replyTo{channel: i.ChannelID, interaction: i.ID}.String(),
		ReceivedAt: a.Now(),
		Server:     i.GuildID,
	})
	if err != nil && !errors.Is(err, agent.ErrDuplicate) {
		var msg string
		if errors.Is(err, agent.ErrStopping) {
			// Discord never sends an interaction again: say so now.
			log.Info().Msg("discord: command refused while Talon stops")
			msg = restarting
		} else {
			ref := agent.NewRef()
			log.Error().Err(err).Str("ref", ref).Msg("discord: accept command")
			msg = "Something went wrong (ref " + ref + ")."
		}
		if _, err := a.isess.InteractionResponseEdit(i, &discordgo.WebhookEdit{Content: &msg, AllowedMentions: noMentions()}, discordgo.WithContext(ctx)); err != nil {
			log.Warn().Err(hideToken(err, i.Token)).Msg("discord: answer failed command")
		}
		a.forgetInteraction(i.ID)
		return
	}
	log.Info().Msg("discord: command accepted")
}

// restarting answers a command that arrives while Talon stops.
const restarting = "Talon is restarting; try again in a moment."

// The modal's text inputs.
const (
	inputName      = "name"
	inputValue     = "value"
	inputHosts     = "hosts"
	inputInjection = "injection"
)

func secretModal() *discordgo.InteractionResponse {
	row := func(t discordgo.TextInput) discordgo.MessageComponent {
		return discordgo.ActionsRow{Components: []discordgo.MessageComponent{t}}
	}
	return &discordgo.InteractionResponse{
		Type: discordgo.InteractionResponseModal,
		Data: &discordgo.InteractionResponseData{
			CustomID: secretModalID,
			Title:    "Store a secret in your vault",
			Components: []discordgo.MessageComponent{
				row(discordgo.TextInput{CustomID: inputName, Label: "Name (tools ask for it by this name)", Style: discordgo.TextInputShort, Required: true, MaxLength: 64, Placeholder: "github_token"}),
				row(discordgo.TextInput{CustomID: inputValue, Label: "Value (never shown to the model)", Style: discordgo.TextInputShort, Required: true, MaxLength: 4000}),
				row(discordgo.TextInput{CustomID: inputHosts, Label: "Hosts it may be sent to (comma separated)", Style: discordgo.TextInputShort, Required: true, MaxLength: 500, Placeholder: "api.github.com"}),
				row(discordgo.TextInput{CustomID: inputInjection, Label: "How to send it (default bearer)", Style: discordgo.TextInputShort, Required: false, MaxLength: 100, Placeholder: "bearer | header:X-Api-Key | query:key | basic:user"}),
			},
		},
	}
}

// handleModal stores a submitted secret straight into the vault. The value
// goes nowhere else: not into a message, a log line or the runtime.
func (a *Adapter) handleModal(ctx context.Context, i *discordgo.Interaction, d discordgo.ModalSubmitInteractionData) {
	if d.CustomID != secretModalID {
		a.respond(ctx, i, ephemeral("This form is not one of mine."))
		return
	}
	p, pl, ok := a.who(i)
	if !ok {
		return
	}
	log := a.Log.With().Str("interaction", i.ID).Str("user", p.User).Logger()
	if reason := a.cfg.refusal(pl); reason != "" {
		a.respond(ctx, i, ephemeral("Sorry, "+reason))
		return
	}
	if a.Secrets == nil {
		a.respond(ctx, i, ephemeral("The vault is not configured on this Talon gateway, so secrets cannot be stored."))
		return
	}
	fields := modalValues(d.Components)
	name := strings.TrimSpace(fields[inputName])
	hosts := strings.FieldsFunc(fields[inputHosts], func(r rune) bool { return r == ',' || r == ' ' || r == '\n' })
	value := fields[inputValue]
	if name == "" || value == "" || len(hosts) == 0 {
		a.respond(ctx, i, ephemeral("A secret needs a name, a value and at least one host. Nothing was stored."))
		return
	}
	err := a.Secrets.AddSecret(ctx, p, agent.NewSecret{
		Name:      name,
		Value:     []byte(value),
		Hosts:     hosts,
		Injection: strings.TrimSpace(fields[inputInjection]),
	})
	var refused *agent.SecretError
	if errors.As(err, &refused) {
		a.respond(ctx, i, ephemeral("Not stored: "+refused.Reason))
		return
	}
	if err != nil {
		ref := agent.NewRef()
		log.Error().Err(err).Str("ref", ref).Msg("discord: store secret")
		a.respond(ctx, i, ephemeral("Could not store the secret (ref "+ref+"). Nothing was stored."))
		return
	}
	log.Info().Msg("discord: secret stored from modal")
	a.respond(ctx, i, ephemeral(fmt.Sprintf("Stored `%s` for %s. Tools granted this name can now use it; the model never sees its value.",
		name, strings.Join(hosts, ", "))))
}

// modalValues collects text input values by custom id.
func modalValues(comps []discordgo.MessageComponent) map[string]string {
	out := map[string]string{}
	var walk func([]discordgo.MessageComponent)
	walk = func(cs []discordgo.MessageComponent) {
		for _, c := range cs {
			switch v := c.(type) {
			case *discordgo.ActionsRow:
				walk(v.Components)
			case discordgo.ActionsRow:
				walk(v.Components)
			case *discordgo.TextInput:
				out[v.CustomID] = v.Value
			case discordgo.TextInput:
				out[v.CustomID] = v.Value
			}
		}
	}
	walk(comps)
	return out
}

// optionValue returns the string option named name, trimmed; "" when it is
// absent or not a string.
func optionValue(opts []*discordgo.ApplicationCommandInteractionDataOption, name string) string {
	for _, o := range opts {
		if o == nil || o.Name != name {
			continue
		}
		if s, ok := o.Value.(string); ok {
			return strings.TrimSpace(s)
		}
	}
	return ""
}
