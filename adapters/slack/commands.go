package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/slack-go/slack"

	"github.com/talonhq/talon/agent"
)

const secretModalID = "talon_secret_add"

// Block ids of the secret modal; each input's action id is "v".
const (
	blockName      = "name"
	blockValue     = "value"
	blockHosts     = "hosts"
	blockInjection = "injection"
	blockParam     = "param"
	inputAction    = "v"
)

const slashUsage = "Usage: `/talon help | new | status | tools | secrets | secret add | secret rm NAME | memory | memory rm ID | routines | routine add \"SCHEDULE\" PROMPT | tz ZONE | connections | connect NAME | disconnect NAME`"

// reServerName is an MCP server's name as configured.
var reServerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,23}$`)

// CommandHint implements agent.CommandSyntax: on Slack the runtime's
// commands are subcommands of /talon (Slack takes a message that starts
// with "/" for a slash command of its own), so help, usages and hints name
// "/talon new", "/talon secret add" (which opens the secret form) and so on.
// handleSlash takes every form named here.
func (a *Adapter) CommandHint(cmd agent.Command) string {
	switch cmd {
	case agent.CommandSecretRemove:
		return "/talon secret rm NAME"
	case agent.CommandMemoryRemove:
		return "/talon memory rm ID"
	case agent.CommandConnect, agent.CommandDisconnect:
		return "/talon " + string(cmd) + " NAME"
	}
	return "/talon " + string(cmd)
}

// responseURLValidity is how long Slack accepts posts to a slash command's
// response_url (30 minutes), less a margin for clocks and transit.
const responseURLValidity = 29 * time.Minute

// ephemeralText is a slash command's immediate answer, shown only to the
// person who typed it.
func ephemeralText(text string) map[string]string {
	return map[string]string{"response_type": "ephemeral", "text": text}
}

// handleSlash handles /talon. help, new, status, tools, secrets and
// "secret rm NAME" become an Inbound ("/help", "/new", "/status", "/tools",
// "/secret", "/secret rm NAME") that the runtime answers, visible only to
// the user: through the command's response_url, which works where the bot
// is not a member (a DM between two people, a private channel), else with
// chat.postEphemeral. "secret add" opens the secret modal. It returns the
// acknowledgement payload, or an error when the command could not be
// persisted (then it is not acknowledged).
//
// A slash command's team_id is the workspace of the person who typed it:
// Slack runs a command for a Slack Connect guest only when the app is
// installed in the guest's own workspace, which is then the one refused
// here unless it is in AllowedTeams.
func (a *Adapter) handleSlash(ctx context.Context, cmd slack.SlashCommand) (any, error) {
	if !a.pol.teamAllowed(cmd.TeamID, cmd.EnterpriseID) {
		return ephemeralText("This workspace is not served by this Talon gateway."), nil
	}
	if reason := a.pol.check(cmd.ChannelID, cmd.UserID); reason != "" {
		return ephemeralText("Sorry, " + reason), nil
	}
	sub, rest, _ := strings.Cut(strings.TrimSpace(unescape(cmd.Text)), " ")
	sub, rest = strings.ToLower(sub), strings.TrimSpace(rest)
	var text string
	switch sub {
	case "", "help":
		text = "/help"
	case "new", "status", "tools", "usage", "routines":
		text = "/" + sub
	case "routine", "tz":
		text = strings.TrimSpace("/" + sub + " " + rest)
	case "secrets":
		text = "/secret"
	case "memory":
		verb, arg, _ := strings.Cut(rest, " ")
		switch strings.ToLower(verb) {
		case "", "list":
			text = "/memory"
		case "rm", "remove", "delete", "forget":
			// Only a number goes through.
			arg = strings.TrimPrefix(strings.TrimSpace(arg), "#")
			if arg == "" || strings.Trim(arg, "0123456789") != "" || len(arg) > 18 {
				return ephemeralText("Usage: `" + a.CommandHint(agent.CommandMemoryRemove) + "`, with the number `/talon memory` shows."), nil
			}
			text = "/memory rm " + arg
		default:
			return ephemeralText("Usage: `/talon memory` lists what I remember for you, `" + a.CommandHint(agent.CommandMemoryRemove) + "` deletes an entry."), nil
		}
	case "connections":
		text = "/connections"
	case "connect", "disconnect":
		if !reServerName.MatchString(rest) {
			return ephemeralText("Usage: `/talon " + sub + " NAME`; `/talon connections` lists the servers."), nil
		}
		text = "/" + sub + " " + rest
	case "secret":
		verb, arg, _ := strings.Cut(rest, " ")
		arg = strings.TrimSpace(arg)
		switch strings.ToLower(verb) {
		case "add":
			return a.openSecretModal(ctx, cmd), nil
		case "rm", "remove", "delete":
			// Only a name goes through: a user may have typed a value.
			if !reSecretName().MatchString(arg) {
				return ephemeralText("Usage: `" + a.CommandHint(agent.CommandSecretRemove) + "`. To store a secret use `/talon secret add`: it opens a private form."), nil
			}
			text = "/secret rm " + arg
		case "", "list":
			text = "/secret"
		default:
			// Never forward what follows "secret" to the runtime
			// verbatim: a user may have typed a value there.
			return ephemeralText("To store a secret use `/talon secret add`: it opens a private form. Never type a secret's value in a message."), nil
		}
	default:
		return ephemeralText(slashUsage), nil
	}
	now := a.now()
	to := replyTo{Channel: cmd.ChannelID, Ephemeral: cmd.UserID}
	if a.validResponseURL(cmd.ResponseURL) {
		to.ResponseURL, to.Until = cmd.ResponseURL, now.Add(responseURLValidity).Unix()
	}
	in := agent.Inbound{
		DedupeKey: "slack:" + cmd.TeamID + ":cmd:" + cmd.TriggerID,
		Key: agent.SessionKey{
			Principal:    principal(cmd.TeamID, cmd.EnterpriseID, cmd.UserID),
			Conversation: agent.Conversation{Channel: cmd.ChannelID},
		},
		Text:       text,
		ReplyTo:    to.encode(),
		ReceivedAt: now,
	}
	if _, err := a.Runtime.Accept(ctx, in); err != nil && !errors.Is(err, agent.ErrDuplicate) {
		if errors.Is(err, agent.ErrStopping) {
			// Slack never sends a command again: say so now.
			a.Log.Info().Str("user_id", cmd.UserID).Msg("slack: command refused while Talon stops")
			return ephemeralText(restarting), nil
		}
		return nil, fmt.Errorf("slack: accept command: %w", err)
	}
	return nil, nil
}

// restarting answers a command that arrives while Talon stops.
const restarting = "Talon is restarting; try again in a moment."

// validResponseURL reports whether u is a response_url Talon may post to:
// https on Slack's own hosts (slack.com, slack-gov.com and their
// subdomains), or the host of Config.APIURL (GovSlack, tests).
func (a *Adapter) validResponseURL(u string) bool {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || p.User != nil {
		return false
	}
	if api, err := url.Parse(a.cfg.APIURL); err == nil && p.Scheme == api.Scheme && strings.EqualFold(p.Host, api.Host) {
		return true
	}
	h := strings.ToLower(p.Hostname())
	return p.Scheme == "https" && (h == "slack.com" || strings.HasSuffix(h, ".slack.com") || h == "slack-gov.com" || strings.HasSuffix(h, ".slack-gov.com"))
}

// secretMeta is the modal's private_metadata: where to confirm.
type secretMeta struct {
	Channel string `json:"c"`
	// ResponseURL is the /talon command's response_url, which reaches the
	// user where the bot is not a member; Until is when it stops being
	// valid (Unix seconds). Never logged.
	ResponseURL string `json:"u,omitempty"`
	Until       int64  `json:"x,omitempty"`
}

// openSecretModal opens the form that stores a secret in the vault.
func (a *Adapter) openSecretModal(ctx context.Context, cmd slack.SlashCommand) any {
	if a.Secrets == nil {
		return ephemeralText("The secret vault is not configured on this Talon gateway.")
	}
	m := secretMeta{Channel: cmd.ChannelID}
	if a.validResponseURL(cmd.ResponseURL) {
		m.ResponseURL, m.Until = cmd.ResponseURL, a.now().Add(responseURLValidity).Unix()
	}
	meta, _ := json.Marshal(m)
	if _, err := a.api.OpenViewContext(ctx, cmd.TriggerID, secretModal(string(meta))); err != nil {
		ref := agent.NewRef()
		a.Log.Error().Err(err).Str("ref", ref).Msg("slack: open secret modal")
		return ephemeralText("Sorry, the form could not be opened (reference " + ref + ").")
	}
	return nil
}

func plain(s string) *slack.TextBlockObject {
	return slack.NewTextBlockObject(slack.PlainTextType, s, false, false)
}

func textInput(block, label, hint, placeholder string, multiline bool) *slack.InputBlock {
	el := slack.NewPlainTextInputBlockElement(plain(placeholder), inputAction)
	el.Multiline = multiline
	var h *slack.TextBlockObject
	if hint != "" {
		h = plain(hint)
	}
	return slack.NewInputBlock(block, plain(label), h, el)
}

// secretModal is the form. Slack has no password input: the value field is
// a plain_text_input, visible while typed, but it goes from the form
// straight into the vault and never into a message, a log or the model.
func secretModal(meta string) slack.ModalViewRequest {
	opt := func(v, label string) *slack.OptionBlockObject {
		return slack.NewOptionBlockObject(v, plain(label), nil)
	}
	bearer := opt("bearer", "Authorization: Bearer <value>")
	sel := slack.NewOptionsSelectBlockElement(slack.OptTypeStatic, plain("How it is sent"), inputAction,
		bearer,
		opt("header", "A header (name below)"),
		opt("query", "A query parameter (name below)"),
		opt("basic", "Basic auth (user name below)"),
	)
	sel.InitialOption = bearer
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		CallbackID:      secretModalID,
		Title:           plain("Store a secret"),
		Submit:          plain("Store"),
		Close:           plain("Cancel"),
		PrivateMetadata: meta,
		ClearOnClose:    true,
		Blocks: slack.Blocks{BlockSet: []slack.Block{
			textInput(blockName, "Name", "Letters, digits, _ . - ; tools ask for it by this name.", "GITHUB_TOKEN", false),
			textInput(blockValue, "Value", "Slack has no password field, so this is visible while you type. It goes straight into the encrypted vault: never into a message, a log or the model.", "the secret value", false),
			textInput(blockHosts, "Hosts", "Comma-separated hosts it may be sent to, e.g. api.github.com", "api.example.com", false),
			slack.NewInputBlock(blockInjection, plain("Sent as"), nil, sel),
			textInput(blockParam, "Header, query parameter or user name", "Needed for header, query and basic.", "X-Api-Key", false).WithOptional(true),
		}},
	}
}

var (
	reSecretName = lazyRegexp(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)
	reHost       = lazyRegexp(`^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$`)
	reParam      = lazyRegexp(`^[A-Za-z0-9_.-]{1,64}$`)
)

const maxSecretBytes = 16 << 10

// onSecretSubmit stores the modal's secret with Secrets.AddSecret. The value
// goes nowhere else. Validation problems go back to the form as
// response_action "errors".
func (a *Adapter) onSecretSubmit(ctx context.Context, cb slack.InteractionCallback, by agent.Principal) any {
	var vals map[string]map[string]slack.BlockAction
	if cb.View.State != nil {
		vals = cb.View.State.Values
	}
	get := func(block string) string { return strings.TrimSpace(vals[block][inputAction].Value) }
	name, hostsRaw, param := get(blockName), get(blockHosts), get(blockParam)
	value := vals[blockValue][inputAction].Value
	inj := vals[blockInjection][inputAction].SelectedOption.Value

	var meta secretMeta
	_ = json.Unmarshal([]byte(cb.View.PrivateMetadata), &meta)

	errs := map[string]string{}
	if !reSecretName().MatchString(name) {
		errs[blockName] = "Use 1–64 letters, digits, _ . - starting with a letter."
	}
	if strings.TrimSpace(value) == "" {
		errs[blockValue] = "Enter the value."
	} else if len(value) > maxSecretBytes {
		errs[blockValue] = "The value is too long."
	}
	var hosts []string
	for h := range strings.SplitSeq(hostsRaw, ",") {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if h == "" {
			continue
		}
		if !reHost().MatchString(h) {
			errs[blockHosts] = "Not a host name: " + h
			break
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 && errs[blockHosts] == "" {
		errs[blockHosts] = "Name at least one host, e.g. api.github.com"
	}
	injection := ""
	switch inj {
	case "", "bearer":
		injection = "bearer"
	case "header", "query", "basic":
		if !reParam().MatchString(param) {
			errs[blockParam] = "Name the header, query parameter or user name (letters, digits, _ . -)."
		}
		injection = inj + ":" + param
	default:
		errs[blockInjection] = "Choose how the secret is sent."
	}
	if a.Secrets == nil {
		errs[blockName] = "The secret vault is not configured on this Talon gateway."
	}
	if reason := a.pol.check(meta.Channel, by.User); reason != "" {
		errs[blockName] = "Sorry, " + reason
	}
	if len(errs) > 0 {
		return slack.NewErrorsViewSubmissionResponse(errs)
	}
	secret := []byte(value)
	err := a.Secrets.AddSecret(ctx, by, agent.NewSecret{Name: name, Value: secret, Hosts: hosts, Injection: injection})
	clear(secret)
	var refused *agent.SecretError
	if errors.As(err, &refused) {
		block := map[string]string{"name": blockName, "value": blockValue, "hosts": blockHosts, "injection": blockParam}[refused.Field]
		if block == "" {
			block = blockName
		}
		return slack.NewErrorsViewSubmissionResponse(map[string]string{block: refused.Reason})
	}
	if err != nil {
		ref := agent.NewRef()
		a.Log.Error().Err(err).Str("ref", ref).Str("user_id", by.User).Str("secret", name).Msg("slack: store secret")
		return slack.NewErrorsViewSubmissionResponse(map[string]string{blockName: "Could not store the secret (reference " + ref + ")."})
	}
	a.Log.Info().Str("user_id", by.User).Str("secret", name).Strs("hosts", hosts).Msg("slack: secret stored from the modal")
	if meta.Channel != "" {
		confirm := fmt.Sprintf("Stored the secret `%s` for %s. Tools that are granted it can now use it; its value is never shown again.",
			escape(name), escape(strings.Join(hosts, ", ")))
		a.background(func(ctx context.Context) { a.confirmSecret(ctx, meta, by.User, confirm) })
	}
	return nil
}

// confirmSecret shows confirm to user: through the command's response_url
// while it is valid (it works where the bot is not a member), else, or
// when that fails, with chat.postEphemeral.
func (a *Adapter) confirmSecret(ctx context.Context, meta secretMeta, user, confirm string) {
	if meta.ResponseURL != "" && a.validResponseURL(meta.ResponseURL) && a.now().Before(time.Unix(meta.Until, 0)) {
		err := a.respond(ctx, meta.ResponseURL, confirm)
		if err == nil {
			return
		}
		a.Log.Warn().Err(err).Str("channel_id", meta.Channel).Msg("slack: response_url refused the confirmation; posting it as an ephemeral message")
	}
	if _, err := a.postEphemeral(ctx, meta.Channel, "", user, confirm); err != nil {
		a.Log.Warn().Err(err).Str("channel_id", meta.Channel).Msg("slack: could not confirm a stored secret")
	}
}
