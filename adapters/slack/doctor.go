package slack

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Manifest is the Slack app manifest Talon needs: exactly the scopes and
// events the adapter uses. Paste it when creating the app.
//
//go:embed manifest.yaml
var Manifest []byte

// ManifestScopes returns the bot scopes Manifest asks for, sorted.
func ManifestScopes() ([]string, error) {
	var m struct {
		OAuth struct {
			Scopes struct {
				Bot []string `yaml:"bot"`
			} `yaml:"scopes"`
		} `yaml:"oauth_config"`
	}
	if err := yaml.Unmarshal(Manifest, &m); err != nil {
		return nil, fmt.Errorf("slack: parse manifest: %w", err)
	}
	s := slices.Clone(m.OAuth.Scopes.Bot)
	slices.Sort(s)
	return s, nil
}

// scopeUses says what breaks without a scope, for the operator.
var scopeUses = map[string]string{
	"app_mentions:read": "mentions in channels are not received",
	"assistant:write":   "no \"working\" status while a turn runs",
	"channels:history":  "threads in public channels are not read before answering; no follow-ups without a mention there",
	"channels:read":     "channels a message mentions are shown to the model by id",
	"chat:write":        "no reply can be posted",
	"commands":          "/talon does not work",
	"files:read":        "files people attach are not read",
	"files:write":       "a long code block or table of a reply cannot be sent as a file: a note says so instead",
	"groups:history":    "threads in private channels are not read before answering; no follow-ups without a mention there",
	"im:history":        "DMs are not received, and threads in them not read",
	"im:write":          "the bot cannot open a DM",
	"mpim:history":      "threads in group DMs are not read before answering",
	"users:read":        "people are shown to the model by id, not by name",
}

// Report is what Check found.
type Report struct {
	// Team and TeamID name the workspace of the bot token; BotUserID and
	// BotID are the bot's identity (the loop guard uses both).
	Team, TeamID, BotUserID, BotID string
	// TeamAllowed reports that the bot's workspace (or its enterprise) is
	// in AllowedTeams.
	TeamAllowed bool
	// SocketMode reports that apps.connections.open accepted the app token
	// (checked in socket mode only).
	SocketMode bool
	// Granted are the bot token's scopes (auth.test's x-oauth-scopes);
	// Missing are those the manifest needs that are not granted.
	Granted, Missing []string
	// Problems lists every failed check, in words for the operator.
	Problems []string
}

// Check is the `talon doctor` check: auth.test with the bot token, the
// granted scopes compared with the manifest's, and in socket mode
// apps.connections.open with the app token. It returns the report and an
// error joining every problem. It opens no WebSocket and changes nothing.
func (a *Adapter) Check(ctx context.Context) (Report, error) {
	var rep Report
	if err := a.setup(); err != nil {
		rep.Problems = append(rep.Problems, err.Error())
		return rep, err
	}
	var errs []error
	fail := func(err error) {
		errs = append(errs, err)
		rep.Problems = append(rep.Problems, err.Error())
	}
	res, err := a.api.AuthTestContext(ctx)
	if err != nil {
		hint := ""
		if fatalAuth(err) {
			hint = "; copy the Bot User OAuth Token (xoxb-…) again from OAuth & Permissions into slack.bot_token (reinstall the app if it was revoked)"
		}
		fail(fmt.Errorf("slack: auth.test with the bot token: %w%s", err, hint))
	} else {
		rep.Team, rep.TeamID, rep.BotUserID, rep.BotID = res.Team, res.TeamID, res.UserID, res.BotID
		for s := range strings.SplitSeq(res.Header.Get("X-Oauth-Scopes"), ",") {
			if s = strings.TrimSpace(s); s != "" {
				rep.Granted = append(rep.Granted, s)
			}
		}
		slices.Sort(rep.Granted)
		want, err := ManifestScopes()
		if err != nil {
			fail(err)
		}
		for _, s := range want {
			if !slices.Contains(rep.Granted, s) {
				rep.Missing = append(rep.Missing, s)
			}
		}
		if len(rep.Missing) > 0 {
			var named []string
			for _, s := range rep.Missing {
				if use := scopeUses[s]; use != "" {
					s += " (" + use + ")"
				}
				named = append(named, s)
			}
			fail(fmt.Errorf("slack: the bot token lacks scopes %s: add them (see the manifest) and reinstall the app", strings.Join(named, "; ")))
		}
		rep.TeamAllowed = a.pol.teamAllowed(res.TeamID, res.EnterpriseID)
		if !rep.TeamAllowed {
			fail(fmt.Errorf("slack: the bot's workspace %s (%s) is not in slack.allowed_teams; add %s to serve it", res.TeamID, res.Team, res.TeamID))
		}
	}
	if a.cfg.Mode == ModeSocket {
		if _, _, err := a.api.StartSocketModeContext(ctx); err != nil {
			fail(fmt.Errorf("slack: apps.connections.open with the app token: %w; create an app-level token with connections:write "+
				"(Basic Information → App-Level Tokens) for slack.app_token and turn on Socket Mode", err))
		} else {
			rep.SocketMode = true
		}
	}
	return rep, errors.Join(errs...)
}
