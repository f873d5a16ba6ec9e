package agent

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/rs/zerolog"
)

// Budgets bound the tokens (input and output, as the providers reported
// them) that turns may use; 0 means no bound. Days and months are UTC.
type Budgets struct {
	UserDaily, UserMonthly int64
	// WorkspaceMonthly bounds all principals of one workspace together,
	// and all the turns run in one Discord server (Inbound.Server): a
	// Discord user's id is global, so their principal names no server, and
	// a server's bound applies to the messages sent in it (not in DMs).
	WorkspaceMonthly int64
	// Exempt principals (the console's admins) are never refused.
	Exempt map[Principal]bool
}

func (b Budgets) any() bool { return b.UserDaily > 0 || b.UserMonthly > 0 || b.WorkspaceMonthly > 0 }

// UsageMeter reads the tokens turns have used since a time.
type UsageMeter interface {
	PrincipalTokens(ctx context.Context, p Principal, since time.Time) (int64, error)
	WorkspaceTokens(ctx context.Context, platform, workspace string, since time.Time) (int64, error)
}

// ServerMeter is a UsageMeter that also counts the tokens of the turns run
// in one Discord server (Inbound.Server). A UsageMeter without it bounds
// no server.
type ServerMeter interface {
	ServerTokens(ctx context.Context, server string, since time.Time) (int64, error)
}

// AccessList says whether an operator denied a principal.
type AccessList interface {
	Denied(ctx context.Context, p Principal) (bool, error)
}

// deniedText is the refusal a denied principal gets.
const deniedText = "An administrator has turned off your access to this assistant, so I cannot answer you. Ask them if you think this is a mistake."

// usageFigures is a principal's use against their budgets, and the use of
// the server they wrote in (server "" when none).
type usageFigures struct {
	day, month, workspace int64
	server                string
	serverMonth           int64
	dayStart, monthStart  time.Time
}

// serverOf is the server whose budget applies to q, "" when none does.
func (r *Runtime) serverOf(q QueuedInbound) string {
	if _, ok := r.Usage.(ServerMeter); !ok || r.Budgets.WorkspaceMonthly <= 0 || q.Key.Principal.Workspace != "" {
		return ""
	}
	return q.Server
}

func (r *Runtime) usageOf(ctx context.Context, p Principal, server string) (usageFigures, error) {
	now := r.Now().UTC()
	u := usageFigures{dayStart: now.Truncate(24 * time.Hour)}
	u.monthStart = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	var err error
	if u.day, err = r.Usage.PrincipalTokens(ctx, p, u.dayStart); err != nil {
		return u, err
	}
	if u.month, err = r.Usage.PrincipalTokens(ctx, p, u.monthStart); err != nil {
		return u, err
	}
	if p.Workspace != "" && r.Budgets.WorkspaceMonthly > 0 {
		if u.workspace, err = r.Usage.WorkspaceTokens(ctx, p.Platform, p.Workspace, u.monthStart); err != nil {
			return u, err
		}
	}
	if server != "" {
		u.server = server
		if u.serverMonth, err = r.Usage.(ServerMeter).ServerTokens(ctx, server, u.monthStart); err != nil {
			return u, err
		}
	}
	return u, nil
}

// overBudget returns what to tell p when a budget of theirs is used up,
// "" when they may go on. A failure to read the usage lets the turn run
// (logged): budgets limit cost, they do not guard anything.
func (r *Runtime) overBudget(ctx context.Context, q QueuedInbound, log *zerolog.Logger) string {
	p := q.Key.Principal
	if r.Usage == nil || !r.Budgets.any() || r.Budgets.Exempt[p] {
		return ""
	}
	u, err := r.usageOf(ctx, p, r.serverOf(q))
	if err != nil {
		log.Error().Err(err).Msg("budget: read usage; the turn runs")
		return ""
	}
	b := r.Budgets
	nextDay := u.dayStart.Add(24 * time.Hour)
	nextMonth := u.monthStart.AddDate(0, 1, 0)
	now := r.Now()
	switch {
	case b.UserDaily > 0 && u.day >= b.UserDaily:
		return fmt.Sprintf("You have used your token budget for today: %s of %s tokens. It resets at %s (in %s). Until then I cannot answer you; an admin can raise budgets.user_daily_tokens.",
			thousands(u.day), thousands(b.UserDaily), nextDay.Format("2006-01-02 15:04 MST"), until(now, nextDay))
	case b.UserMonthly > 0 && u.month >= b.UserMonthly:
		return fmt.Sprintf("You have used your token budget for this month: %s of %s tokens. It resets on %s (in %s). Until then I cannot answer you; an admin can raise budgets.user_monthly_tokens.",
			thousands(u.month), thousands(b.UserMonthly), nextMonth.Format("2006-01-02 15:04 MST"), until(now, nextMonth))
	case b.WorkspaceMonthly > 0 && p.Workspace != "" && u.workspace >= b.WorkspaceMonthly:
		return fmt.Sprintf("This workspace has used its token budget for this month: %s of %s tokens. It resets on %s (in %s). Until then I cannot answer anyone here; an admin can raise budgets.workspace_monthly_tokens.",
			thousands(u.workspace), thousands(b.WorkspaceMonthly), nextMonth.Format("2006-01-02 15:04 MST"), until(now, nextMonth))
	case u.server != "" && u.serverMonth >= b.WorkspaceMonthly:
		return fmt.Sprintf("This server has used its token budget for this month: %s of %s tokens. It resets on %s (in %s). Until then I cannot answer anyone here; direct messages are not counted to the server. An admin can raise budgets.workspace_monthly_tokens.",
			thousands(u.serverMonth), thousands(b.WorkspaceMonthly), nextMonth.Format("2006-01-02 15:04 MST"), until(now, nextMonth))
	}
	return ""
}

// usageCommand answers /usage: the sender's own figures.
func (r *Runtime) usageCommand(ctx context.Context, q QueuedInbound) (string, error) {
	p := q.Key.Principal
	if r.Usage == nil {
		return "Usage is not recorded here.", nil
	}
	u, err := r.usageOf(ctx, p, r.serverOf(q))
	if err != nil {
		return "", err
	}
	b := r.Budgets
	of := func(used, budget int64) string {
		if budget <= 0 {
			return thousands(used) + " tokens (no budget)"
		}
		return thousands(used) + " of " + thousands(budget) + " tokens"
	}
	text := fmt.Sprintf("Your usage: today %s; this month %s.", of(u.day, b.UserDaily), of(u.month, b.UserMonthly))
	if b.WorkspaceMonthly > 0 && p.Workspace != "" {
		text += fmt.Sprintf("\nThis workspace this month: %s.", of(u.workspace, b.WorkspaceMonthly))
	}
	if u.server != "" {
		text += fmt.Sprintf("\nThis server this month: %s.", of(u.serverMonth, b.WorkspaceMonthly))
	}
	text += "\nDays reset at 00:00 UTC, months on the 1st."
	if b.Exempt[p] {
		text += "\nYou are an admin: budgets do not apply to you."
	}
	return text, nil
}

// thousands formats n with commas: 1234567 → 1,234,567.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// until says how long from now to t, in hours and minutes.
func until(now, t time.Time) string {
	d := t.Sub(now).Round(time.Minute)
	if d < time.Hour {
		return fmt.Sprintf("%d min", int(d.Minutes()))
	}
	if d < 48*time.Hour {
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}
